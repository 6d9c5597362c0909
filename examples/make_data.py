"""Write ``examples/breast_cancer.npz`` from scikit-learn's bundled breast-cancer data (569
samples, 30 features, 2 classes; nothing is downloaded): standardized features, a stratified
80/20 split into ``x_train, y_train, x_val, y_val``.

    python examples/make_data.py [out.npz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def main(out: str = str(Path(__file__).with_name("breast_cancer.npz"))) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    mean, std = x_train.mean(0), x_train.std(0)  # statistics of the training part only
    np.savez(
        out,
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=y_train.astype(np.int32),
        x_val=((x_val - mean) / std).astype(np.float32),
        y_val=y_val.astype(np.int32),
    )
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
