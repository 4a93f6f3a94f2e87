#!/usr/bin/env python
"""Newton-Schulz quintic coefficient schedules: Polar Express and CANS.

Every schedule here is a list of ``(a, b, c)`` triples. One Newton-Schulz step
maps ``X -> a X + b (X X^T) X + c (X X^T)^2 X``. On the singular values this is
the odd scalar polynomial ``p(x) = a x + b x^3 + c x^5``. The input to the first
step is ``X / (s * ||X||_F)``, so every singular value lies in ``[0, 1/s]``.
Here ``s = 1.02`` for the Polar Express schedules (modded-nanogpt uses
``X / (||X||_F * 1.02 + eps)``) and ``s = 1`` for the others.

The script needs only numpy and runs in about a second:

    python tools/ns_coefficients.py

It prints every schedule as Python tuples, the reproduction errors against the
published lists, and the "promised band" table.

1. Polar Express
----------------
Reference: N. Amsel, D. Persson, C. Musco, R. M. Gower, "The Polar Express:
Optimal Matrix Sign Methods and Their Application to the Muon Algorithm",
arXiv:2505.16932. Reference code: github.com/NoahAmsel/PolarExpress,
``optimal_quintic`` and ``optimal_composition``.

The construction is greedy. Start with ``[l, u] = [l0, 1]`` and, for each step:

* Compute ``p``, the odd quintic minimizing ``max |1 - p(x)|`` on
  ``[max(l, cushion*u), u]``. This uses the simplified Remez exchange on 4
  equioscillation points ``{l, q, r, u}``; ``q`` and ``r`` are the critical
  points of ``p``. When ``l/u >= 1 - 5e-6``, use the limit polynomial
  ``(15/8, -10/8, 3/8)`` scaled to ``u``.
* Cushioning. If ``cushion*u > l``, rescale ``p`` so that it is centered on 1
  over the true interval: ``p *= 2 / (p(l) + p(u))``.
* Safety factor, on every step except the last: ``p(x) -> p(x / (1 + eps))``,
  i.e. ``a /= s``, ``b /= s**3``, ``c /= s**5``.
* Update the interval: ``l = p(l)``, ``u = 2 - l``.

Parameters that reproduce the list shipped in modded-nanogpt (its comment reads
"Computed for num_iters=5, safety_factor=2e-2, cushion=2"):

    l0 = 1e-3, num_iters = 5, safety_factor_eps = 2e-2, cushion = 0.02

The output matches the published 5-step list to a max relative error of about
1e-15 (printed, and asserted to be <= 1e-6). Running the same construction with ``num_iters = 8``
gives the 8-step list. Its first 4 steps equal those of the 5-step list. Step 5
differs because step 5 is no longer the last step, so the safety factor now
applies to it. The 8-step list is compared with the
``'polar_express_safer'`` list in kozistr/pytorch_optimizer
(``pytorch_optimizer/optimizer/shampoo_utils.py``), which was computed with the
same parameters. The max relative error is below 1e-7 and sits in steps 7-8,
where ``l/u`` is about ``1 - 1e-5`` and the 4x4 Remez system is
ill-conditioned; those digits depend on floating-point details. Steps 1-6 agree
to about 1e-14.
For comparison, the paper repository's own default is
``safety_factor_eps = 1e-2``, ``cushion = 0.02``, ``num_iters = 10``. That gives
the ``(8.2373..., -23.1577..., 16.6806...)`` list, which is not used here.

2. CANS
-------
Reference: E. Grishina, M. Smirnov, M. Rakhuba, "Accelerating Newton-Schulz
Iteration for Orthogonalization via Chebyshev-type Polynomials",
arXiv:2506.10935. Reference code: github.com/GrishKate/accelerating_orthogonalization
(``polynomials.py``: ``remez``, ``delta_orthogonalization``). This file is a
clean-room reimplementation of the algorithm, not a copy of that code.

* CANS iteration. On ``[a_k, b_k]``, take the Chebyshev-optimal odd
  polynomial ``p_k``: the best uniform approximation of 1, found with the same
  Remez solver as above, with no cushion or safety factor. Its error is
  ``eps_k``. Then set ``[a_{k+1}, b_{k+1}] = [1 - eps_k, 1 + eps_k]``.
* delta-orthogonalization, the paper's recipe for Muon. Fix ``b_0 = B = 1``
  and bisect on the left endpoint ``a_0`` so that after ``n`` steps the final
  error ``eps_n`` equals ``delta``. Every singular value in ``[a_0, 1]`` then
  lands in ``[1 - delta, 1 + delta]``, and the composition's slope at 0 is as
  large as possible. The paper uses ``delta = 0.3``.
* The published table (paper Appendix, "CANS, eps=0.3, degree 5, 4 iterations,
  12 matmuls") is reproduced to about 2e-15 by running the CANS iteration from
  ``[a_0, b_0] = [0.00215, 1]``. That ``a_0`` is the delta-orthogonalization
  value (about 0.002136 for n=4), rounded; its final error is 0.29791, not
  exactly 0.3.
* The 5-step schedule is the same recipe with ``n = 5, delta = 0.3, B = 1``,
  with ``a_0`` found by bisection. No 5-step degree-5 CANS list has been
  published, so the table offers nothing to check it against.

Caveat: CANS's own NanoGPT runs normalize with a Gelfand-formula estimate of
the spectral norm rather than the Frobenius norm, so their inputs start closer
to 1. Here the input is Frobenius-normalized (scale 1.0), which keeps
``sigma_max <= 1 = B``.

3. Promised band
----------------
For each schedule and each ``l`` in ``{1e-3, 1e-2, 1e-1}``, the band is the min
and max, in float64, of ``phi(x) = p_T(...p_1(x / s)...)`` over the
normalized input singular value ``x = sigma / ||X||_F`` in ``[l, 1]``. The value
is found on a dense grid (log-spaced plus linear), then refined around the
extrema. ``phi'(0) = prod_k a_k / s`` is printed as well.
"""

from __future__ import annotations

from math import inf, sqrt

import numpy as np

# --------------------------------------------------------------------------
# Published reference lists (for reproduction checks)
# --------------------------------------------------------------------------

# modded-nanogpt train_gpt.py, "Computed for num_iters=5, safety_factor=2e-2, cushion=2"
PUBLISHED_POLAR_EXPRESS_5 = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]

# kozistr/pytorch_optimizer, shampoo_utils.py NS_COEFFICIENTS['polar_express_safer']
PUBLISHED_POLAR_EXPRESS_8 = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
    (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
    (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
    (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
    (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
    (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
    (1.8749999923301852, -1.2499999836060613, 0.374999991275876),
]

# CANS paper (arXiv:2506.10935v2) Appendix table: degree 5, 4 iterations, eps(delta)=0.3
PUBLISHED_CANS_4 = [
    (8.420293602126344, -24.910491192120688, 18.472094206318726),
    (4.101228661246281, -3.0518555467946813, 0.5741241025302702),
    (3.6809819251109155, -2.75396502307162, 0.5401902781108926),
    (2.7280916801566666, -2.0315492757300913, 0.45866431681858805),
]

JORDAN = [(3.4445, -4.7750, 2.0315)] * 5

YOU = [
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
]

# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------

PE_L0 = 1e-3
PE_SAFETY_EPS = 2e-2
PE_CUSHION = 0.02
PE_NORM_SCALE = 1.02  # X / (||X||_F * 1.02 + eps)

CANS_DELTA = 0.3
CANS_B = 1.0
CANS_PUBLISHED_A0 = 0.00215


# --------------------------------------------------------------------------
# Remez for the odd quintic best-approximating 1 on [l, u]
# --------------------------------------------------------------------------


def _peval(coeffs, x):
    a, b, c = coeffs
    x2 = x * x
    return x * (a + x2 * (b + c * x2))


def optimal_odd_quintic(l: float, u: float, max_iter: int = 100):
    """Minimax odd quintic p(x) = a x + b x^3 + c x^5 approximating 1 on [l, u].

    Simplified Remez exchange with 4 alternation points {l, q, r, u}, where
    p(l) = 1 - E, p(q) = 1 + E, p(r) = 1 - E, p(u) = 1 + E and q < r are the
    critical points of p. Returns ((a, b, c), E), where E is the uniform error.
    """
    assert 0.0 <= l <= u
    if 1.0 - 5e-6 <= l / u:
        # Degenerate interval: the equioscillating polynomial is numerically the
        # 2nd-order Taylor (Kovarik) polynomial centred at u.
        coeffs = ((15 / 8) / u, (-10 / 8) / u**3, (3 / 8) / u**5)
        err = max(abs(_peval(coeffs, l) - 1.0), abs(_peval(coeffs, u) - 1.0))
        return coeffs, err
    q, r = (3 * l + u) / 4, (l + 3 * u) / 4  # exact in the limit l -> u
    E, old_E = inf, None
    for _ in range(max_iter):
        old_E = E
        M = np.array(
            [
                [l, l**3, l**5, 1.0],
                [q, q**3, q**5, -1.0],
                [r, r**3, r**5, 1.0],
                [u, u**3, u**5, -1.0],
            ]
        )
        a, b, c, E = np.linalg.solve(M, np.ones(4))
        # critical points: p'(x) = a + 3 b x^2 + 5 c x^4 = 0
        disc = max(9 * b * b - 20 * a * c, 0.0)
        q, r = np.sqrt((-3 * b + np.array([-1.0, 1.0]) * sqrt(disc)) / (10 * c))
        if abs(old_E - E) <= 1e-15:
            break
    return (float(a), float(b), float(c)), abs(float(E))


# --------------------------------------------------------------------------
# Polar Express (greedy composition with cushion + safety factor)
# --------------------------------------------------------------------------


def polar_express(
    l0: float = PE_L0,
    num_iters: int = 5,
    safety_factor_eps: float = PE_SAFETY_EPS,
    cushion: float = PE_CUSHION,
):
    l, u = float(l0), 1.0
    s = 1.0 + safety_factor_eps
    out = []
    for it in range(num_iters):
        (a, b, c), _ = optimal_odd_quintic(max(l, cushion * u), u)
        if cushion * u > l:
            # re-centre around 1 with respect to the true [l, u]
            k = 2.0 / (_peval((a, b, c), l) + _peval((a, b, c), u))
            a, b, c = a * k, b * k, c * k
        if it < num_iters - 1:  # safety factor on all but the last polynomial
            a, b, c = a / s, b / s**3, c / s**5
        out.append((a, b, c))
        l = _peval((a, b, c), l)
        u = 2.0 - l
    return out


# --------------------------------------------------------------------------
# CANS (Chebyshev-optimal chain + delta-orthogonalization)
# --------------------------------------------------------------------------


def cans_chain(a0: float, b0: float, n: int):
    """CANS iteration: best odd quintic on [a_k, b_k], then [1-eps_k, 1+eps_k]."""
    a, b = float(a0), float(b0)
    out, err = [], None
    for _ in range(n):
        coeffs, err = optimal_odd_quintic(a, b)
        out.append(coeffs)
        a, b = 1.0 - err, 1.0 + err
    return out, err


def cans_delta_orthogonalization(n: int, delta: float = CANS_DELTA, B: float = CANS_B):
    """Bisect on a0 so that the n-step CANS chain from [a0, B] ends with error delta."""
    lo, hi = 0.0, B
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        _, err = cans_chain(mid, B, n)
        if err < delta:
            hi = mid  # interval too easy -> can start lower
        else:
            lo = mid
        if hi - lo <= 1e-17:
            break
    a0 = hi  # the endpoint that satisfies err <= delta
    coeffs, err = cans_chain(a0, B, n)
    return coeffs, a0, err


# --------------------------------------------------------------------------
# Bands
# --------------------------------------------------------------------------


def compose(x, schedule, scale=1.0):
    y = np.asarray(x, dtype=np.float64) / scale
    for coeffs in schedule:
        y = _peval(coeffs, y)
    return y


def _refine(f, x0, h, lo, hi, sign, rounds=4, n=2001):
    best_x, best_v = x0, sign * f(np.array([x0]))[0]
    for _ in range(rounds):
        xs = np.linspace(max(lo, best_x - 2 * h), min(hi, best_x + 2 * h), n)
        vs = sign * f(xs)
        i = int(np.argmin(vs))
        if vs[i] <= best_v:
            best_x, best_v = xs[i], vs[i]
        h = (xs[1] - xs[0]) if len(xs) > 1 else h
    return best_x, sign * best_v


def band(schedule, scale, l):
    f = lambda x: compose(x, schedule, scale)  # noqa: E731
    xs = np.unique(np.concatenate([np.geomspace(l, 1.0, 200_001), np.linspace(l, 1.0, 200_001)]))
    vs = f(xs)
    i_min, i_max = int(np.argmin(vs)), int(np.argmax(vs))

    def local_h(i):
        return max(xs[min(i + 1, len(xs) - 1)] - xs[i], xs[i] - xs[max(i - 1, 0)])

    x_min, v_min = _refine(f, xs[i_min], local_h(i_min), l, 1.0, +1.0)
    x_max, v_max = _refine(f, xs[i_max], local_h(i_max), l, 1.0, -1.0)
    return v_min, v_max, x_min, x_max


def zero_slope(schedule, scale):
    return float(np.prod([a for a, _, _ in schedule])) / scale


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def max_rel_err(ours, ref):
    return max(abs(x - y) / abs(y) for o, r in zip(ours, ref) for x, y in zip(o, r))


def fmt_schedule(name, sched):
    lines = [f"{name} = ["]
    lines += [f"    ({a!r}, {b!r}, {c!r})," for a, b, c in sched]
    lines.append("]")
    return "\n".join(lines)


def main():
    pe5 = polar_express(num_iters=5)
    pe8 = polar_express(num_iters=8)
    cans4_pub, cans4_err = cans_chain(CANS_PUBLISHED_A0, CANS_B, 4)
    cans4_delta, cans4_a0, _ = cans_delta_orthogonalization(4)
    cans5, cans5_a0, cans5_err = cans_delta_orthogonalization(5)

    print("# ---- Polar Express (l0=1e-3, safety_factor_eps=2e-2, cushion=0.02) ----")
    print(fmt_schedule("POLAR_EXPRESS_5", pe5))
    print(f"# max rel err vs modded-nanogpt 5-step list: {max_rel_err(pe5, PUBLISHED_POLAR_EXPRESS_5):.3e}")
    print(fmt_schedule("POLAR_EXPRESS_8", pe8))
    print(
        "# max rel err vs pytorch_optimizer 'polar_express_safer' 8-step list: "
        f"{max_rel_err(pe8, PUBLISHED_POLAR_EXPRESS_8):.3e}"
    )
    print()
    print("# ---- CANS (degree 5, delta-orthogonalization, delta=0.3, B=1) ----")
    print(fmt_schedule("CANS_4_PUBLISHED_REPRO", cans4_pub))
    print(
        f"# chain from [a0, b0] = [{CANS_PUBLISHED_A0}, 1]: final eps = {cans4_err:.6f}; "
        f"max rel err vs paper table: {max_rel_err(cans4_pub, PUBLISHED_CANS_4):.3e}"
    )
    print(
        f"# (exact delta=0.3 bisection for n=4 gives a0 = {cans4_a0:.9g}; "
        f"max rel diff to table {max_rel_err(cans4_delta, PUBLISHED_CANS_4):.1e})"
    )
    print(fmt_schedule("CANS_5", cans5))
    print(f"# n=5: a0 = {cans5_a0!r}, final eps = {cans5_err:.12f} (band [1-delta, 1+delta] on [a0, 1])")
    print()

    schedules = [
        ("polar_express_5", pe5, PE_NORM_SCALE),
        ("polar_express_8", pe8, PE_NORM_SCALE),
        ("cans_5", cans5, 1.0),
        ("cans_4_published", cans4_pub, 1.0),
        ("jordan", JORDAN, 1.0),
        ("you", YOU, 1.0),
    ]
    print("# ---- Promised band: min/max of composed phi(x) = p_T(...p_1(x/scale)) on x in [l, 1] ----")
    hdr = f"{'schedule':<18} {'steps':>5} {'scale':>5} {'phi_prime_0':>11}"
    for l in (1e-3, 1e-2, 1e-1):
        hdr += f" | {'min l=' + format(l, 'g'):>12} {'max l=' + format(l, 'g'):>12}"
    print(hdr)
    for name, sched, scale in schedules:
        row = f"{name:<18} {len(sched):>5} {scale:>5.2f} {zero_slope(sched, scale):>11.2f}"
        for l in (1e-3, 1e-2, 1e-1):
            vmin, vmax, _, _ = band(sched, scale, l)
            row += f" | {vmin:>12.9f} {vmax:>12.9f}"
        print(row)

    # reproduction checks (fail loudly if the construction drifts)
    assert max_rel_err(pe5, PUBLISHED_POLAR_EXPRESS_5) <= 1e-6
    assert max_rel_err(pe8, PUBLISHED_POLAR_EXPRESS_8) <= 1e-6
    assert max_rel_err(cans4_pub, PUBLISHED_CANS_4) <= 1e-6
    print("\n# reproduction checks passed (all max rel err <= 1e-6)")


if __name__ == "__main__":
    main()
