"""One verdict everywhere: docs/snippets/verdict.md is the text; the index and
Results pages include it (MyST), the README (which GitHub shows raw) carries
a copy between marker comments, equal to the file."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERDICT = ROOT / "docs" / "snippets" / "verdict.md"
INCLUDE = "```{include} snippets/verdict.md\n```\n"
README_BLOCK = re.compile(
    r"^<!-- verdict: a copy of docs/snippets/verdict\.md[^\n]*-->\n(.*?)"
    r"^<!-- /verdict -->$", re.S | re.M)


def test_index_and_results_include_the_one_verdict():
  for page in ("index.md", "results.md"):
    text = (ROOT / "docs" / page).read_text()
    assert text.count(INCLUDE) == 1, page


def test_readme_carries_the_same_verdict():
  blocks = README_BLOCK.findall((ROOT / "README.md").read_text())
  assert len(blocks) == 1, "README.md needs one <!-- verdict --> block"
  assert blocks[0] == VERDICT.read_text(), (
      "README.md's verdict differs from docs/snippets/verdict.md: copy the "
      "file between the markers")


def _paired_differences() -> list[tuple[float, float, str]]:
  """(mean, std, study) of every paired MiMuon - Muon test-loss difference,
  and every paired MiMuon - Muon / MuSGD test mAP50-95 difference of the
  detection study, and its paired test - train gap differences, in the
  committed results (experiments/results/*/*.json)."""
  found = []

  def walk(node, study):
    if isinstance(node, dict):
      if node.get("d_test_loss_vs_muon_mean") is not None:
        found.append((node["d_test_loss_vs_muon_mean"],
                      node["d_test_loss_vs_muon_std"], study))
      for key in ("d_vs_muon", "d_vs_musgd", "d_gap_vs_muon",
                  "d_gap_vs_musgd"):
        if isinstance(node.get(key), list):  # [mean, std, significant]
          found.append((node[key][0], node[key][1], study))
      for value in node.values():
        walk(value, study)
    elif isinstance(node, list):
      for value in node:
        walk(value, study)

  for path in sorted((ROOT / "experiments" / "results").glob("*/*.json")):
    walk(json.loads(path.read_text()), path.parent.name)
  return found


def test_every_difference_the_verdict_quotes_is_a_committed_result():
  """Each "Δ ± std" of the verdict is a committed paired difference, as
  rounded there; the one in MiMuon's favour is lm_converge's."""
  differences = _paired_differences()
  quoted = re.findall(r"([+−]\d+\.(\d+)) ± (\d+\.(\d+))", VERDICT.read_text())
  assert len(quoted) >= 8, quoted
  studies = {}
  for mean, mean_digits, std, std_digits in quoted:
    value = float(mean.replace("−", "-"))
    studies[mean] = {
        study for m, s, study in differences
        if round(m, len(mean_digits)) == value
        and round(s, len(std_digits)) == float(std)}
    assert studies[mean], f"{mean} ± {std} is in no experiments/results/"
  assert studies["−0.026"] == {"lm_converge"}
  for detection in ("+0.011", "−0.029", "+0.056"):  # test mAP50-95
    assert studies[detection] == {"yolo26_detection"}, detection
  for detection in ("−0.001", "+0.110", "+0.014"):  # 4000 images
    assert "yolo26_detection_n4000" in studies[detection], detection
