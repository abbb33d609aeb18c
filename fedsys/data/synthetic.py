"""FedProx's Synthetic(alpha, beta) benchmark (Li et al. 2020, after Shamir et al. 2014).

Each device k has its own softmax-regression model and its own input distribution, so
``alpha`` controls how much the devices' models differ and ``beta`` how much their inputs
differ. The generator follows the paper and the authors' reference script
(``generate_synthetic.py`` in the FedProx repository):

* sizes n_k ~ lognormal(4, 2) + 50 (power law), cut at ``MAX_DEVICE_SAMPLES`` (or
  ``data.synthetic_max_samples``);
* u_k ~ N(0, alpha), W_k ~ N(u_k, 1) (60 x 10), b_k ~ N(u_k, 1);
* B_k ~ N(0, beta), v_k ~ N(B_k, 1) (60), x ~ N(v_k, Sigma), Sigma_jj = j^-1.2;
* y = argmax(softmax(W_k x + b_k)), computed as argmax(W_k x + b_k) since softmax is
  monotone.

Each device draws from its own generator, seeded by (seed, device index), so a client can
make its own device's data alone (see ``synthetic_device``).

As in the reference script, ``alpha`` and ``beta`` are used as standard deviations (the
paper writes N(0, alpha); the two agree for the usual settings 0 and 1).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedsys.data.types import ArrayDataset, DatasetInfo
from fedsys.errors import DataError

NUM_FEATURES = 60
NUM_CLASSES = 10
MIN_DEVICE_SAMPLES = 50
# lognormal(4, 2) exceeds 10,000 with probability about 0.5%; the cut only trims that tail
# so that one outlier device cannot make generation (and its client's rounds) slow.
MAX_DEVICE_SAMPLES = 10_000
SYNTHETIC_INFO = DatasetInfo(input_shape=(NUM_FEATURES,), num_classes=NUM_CLASSES)


def device_size(rng: np.random.Generator, max_samples: int = MAX_DEVICE_SAMPLES) -> int:
    """A power-law sample count for one device, as in the reference script."""
    raw = int(rng.lognormal(mean=4.0, sigma=2.0))
    return min(raw + MIN_DEVICE_SAMPLES, max_samples)


def _device_samples(
    rng: np.random.Generator, u: float, big_b: float, n: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """n samples of one device: its own model (W, b) and input mean v."""
    w = rng.normal(u, 1.0, size=(NUM_FEATURES, NUM_CLASSES))
    b = rng.normal(u, 1.0, size=NUM_CLASSES)
    v = rng.normal(big_b, 1.0, size=NUM_FEATURES)
    # Sigma is diagonal, so x = v + sqrt(diag(Sigma)) * z draws N(v, Sigma) directly.
    sigma_sqrt = np.arange(1, NUM_FEATURES + 1, dtype=np.float64) ** (-1.2 / 2)
    x = v + sigma_sqrt * rng.standard_normal(size=(n, NUM_FEATURES))
    y = np.argmax(x @ w + b, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def _check(devices: int, test_fraction: float) -> None:
    if devices < 1:
        raise DataError(f"data.synthetic_devices must be >= 1, got {devices}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"data.test_fraction must be in (0, 1), got {test_fraction}")


def synthetic_device(
    alpha: float,
    beta: float,
    device: int,
    test_fraction: float,
    seed: int,
    max_samples: int = MAX_DEVICE_SAMPLES,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Device ``device``'s train and test share, from its own generator.

    Everything about a device (size, u_k, B_k, model, samples) is drawn from a generator
    seeded by (seed, device), so one device costs the same to make whatever the population:
    a simulated client generates only its own data, never the other N - 1 devices'.
    Each device keeps ``round(test_fraction * n_k)`` samples for testing, but at least one
    (so every client can be evaluated on its own distribution) and at most n_k - 1.
    """
    rng = np.random.default_rng([seed, device])
    n = device_size(rng, max_samples)
    u = float(rng.normal(0.0, alpha)) if alpha > 0 else 0.0
    big_b = float(rng.normal(0.0, beta)) if beta > 0 else 0.0
    x, y = _device_samples(rng, u, big_b, n)
    groups = np.full(n, device, dtype=np.int64)
    n_train = n - min(n - 1, max(1, round(test_fraction * n)))
    return (
        ArrayDataset(x[:n_train], y[:n_train], groups[:n_train]),
        ArrayDataset(x[n_train:], y[n_train:], groups[n_train:]),
    )


def make_synthetic(
    alpha: float,
    beta: float,
    devices: int,
    test_fraction: float,
    seed: int,
    max_samples: int = MAX_DEVICE_SAMPLES,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and test sets of all devices, ``groups`` = device index."""
    _check(devices, test_fraction)
    train: list[ArrayDataset] = []
    test: list[ArrayDataset] = []
    for k in range(devices):
        tr, te = synthetic_device(alpha, beta, k, test_fraction, seed, max_samples)
        train.append(tr)
        test.append(te)
    return _concatenate(train), _concatenate(test)


def synthetic_test(
    alpha: float,
    beta: float,
    devices: int,
    test_fraction: float,
    seed: int,
    max_samples: int = MAX_DEVICE_SAMPLES,
    sample_devices: int | None = None,
) -> ArrayDataset:
    """The test shares of all devices, or of ``sample_devices`` of them spread evenly over
    the population (the server's held-out set), made one device at a time: the training
    samples are never all in memory together."""
    _check(devices, test_fraction)
    chosen: list[int] = list(range(devices))
    if sample_devices is not None and sample_devices < devices:
        chosen = sorted(
            {round(i * (devices - 1) / max(sample_devices - 1, 1)) for i in range(sample_devices)}
        )
    return _concatenate(
        [synthetic_device(alpha, beta, k, test_fraction, seed, max_samples)[1] for k in chosen]
    )


def _concatenate(parts: list[ArrayDataset]) -> ArrayDataset:
    groups = [p.groups for p in parts if p.groups is not None]
    return ArrayDataset(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        groups=np.concatenate(groups),
    )
