"""The examples' persistent compilation cache: a second process reads the
range test's program from disk instead of compiling it."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = '''
import json, sys
import jax, jax.numpy as jnp, optax
from examples import compile_cache
import optax_clr
events = []
jax.monitoring.register_event_listener(
    lambda name, **kwargs: events.append(name))
path = compile_cache.enable(sys.argv[1] if len(sys.argv) > 1 else None)
loss = lambda w, b: jnp.sum((w - b) ** 2)
optax_clr.range_test(loss, jnp.zeros(3), optax.sgd, jnp.ones((20, 3)),
                     num_steps=20)
print(json.dumps({'path': path,
                  'hits': events.count('/jax/compilation_cache/cache_hits')}))
'''


def run(*args, env_value=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env.pop('OPTAX_CLR_COMPILATION_CACHE', None)
  if env_value is not None:
    env['OPTAX_CLR_COMPILATION_CACHE'] = env_value
  out = subprocess.run([sys.executable, '-c', SCRIPT, *args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache(tmp_path):
  cache = str(tmp_path / 'cache')
  first = run(cache)
  assert first['path'] == cache and os.listdir(cache)
  second = run(cache)
  assert second['hits'] > first['hits']


def test_environment_variable_and_off_by_default(tmp_path):
  assert run()['path'] is None
  cache = str(tmp_path / 'from_env')
  assert run(env_value=cache)['path'] == cache
  assert os.listdir(cache)
