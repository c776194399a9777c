"""gc.scipy: the SciPy functions that NumPy dispatch cannot reach, as `jax.scipy`, for graph nodes.

`gc.scipy.special` (logsumexp, expit, xlogy, gammaln, erfc, log_ndtr, ...) and `gc.scipy.stats` (norm,
multivariate_normal, t, gamma, beta, poisson, ... with logpdf/pdf/cdf/logcdf) are compositions of gc ops, so
every backend, derivative order and export takes them as they are. SciPy's own functions call np.asarray
and cannot take a node; these take nodes, NumPy arrays and numbers together. A call with no node among its
arguments returns SciPy's own NumPy value (SciPy is imported then, never at `import graphcompiler`).
"""

from . import special, stats

__all__ = ["special", "stats"]
