"""Quality and diversity metrics on features, toy points and class labels (no feature networks here).

frechet:  feature_stats, frechet_distance, frechet_distance_from_features (FID), kernel_distance (KID)
prdc:     prdc, precision_recall (k=3), density_coverage (k=5), knn_radii
toy:      mode_stats (modes covered, high-quality fraction), sliced_wasserstein, wasserstein_exact
classes:  class_histogram, class_entropy, kl_to_uniform

All accept numpy arrays or torch tensors (any device) and return plain Python floats/ints or numpy arrays.
The package attribute `prdc` is the function, which shadows the submodule of the same name: reach the
module's other names with `from trilemma.metrics.prdc import knn_radii` (not `import ... .prdc as m`).
"""

from .classes import class_entropy, class_histogram, kl_to_uniform
from .frechet import feature_stats, frechet_distance, frechet_distance_from_features, kernel_distance
from .prdc import density_coverage, knn_radii, prdc, precision_recall
from .toy import mode_stats, sliced_wasserstein, wasserstein_exact

__all__ = [
    "class_entropy",
    "class_histogram",
    "density_coverage",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_distance",
    "kl_to_uniform",
    "knn_radii",
    "mode_stats",
    "prdc",
    "precision_recall",
    "sliced_wasserstein",
    "wasserstein_exact",
]
