"""mimuon_optax.checkpoint imports without Orbax; using it names the install."""

import subprocess
import sys
import textwrap


def test_checkpoint_imports_on_core_install_and_names_the_package():
  # A fresh interpreter in which `import orbax...` fails, as on a core install.
  code = textwrap.dedent('''
      import sys
      sys.modules['orbax'] = None
      sys.modules['orbax.checkpoint'] = None
      import jax.numpy as jnp
      import mimuon_optax.checkpoint as ck
      target = ck.abstract_like({'w': jnp.ones(2)}, ())
      assert target['params']['w'].shape == (2,)
      for call in (lambda: ck.save_state('/tmp/x', 0, {}, ()),
                   lambda: ck.restore_state('/tmp/x', target)):
        try:
          call()
        except ImportError as e:
          assert 'pip install orbax-checkpoint' in str(e), e
        else:
          raise AssertionError('no ImportError')
      print('ok')
  ''')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=False)
  assert out.returncode == 0 and 'ok' in out.stdout, out.stderr
