"""Hayou et al. 2020, Table 2: standard vs scaled ResNets (branch of layer l times 1/sqrt(l), eq. 13)
trained with SGD (batch 128, lr 0.1 divided by 10 twice), test accuracy after an early and the last epoch.

Paper scale: CIFAR ResNet-32/50/104 (``cifar_resnet``) on CIFAR-100, 160 epochs, decays at 80 and 120,
read at epochs 10 and 160 (needs a GPU and the CIFAR-100 archive). Reduced scales: the fully connected
ReLU ResNet of eqs. 12-13 (``ntkrepro.nets.resnet``, NTK parameterization) on flattened stand-in images,
fewer and shallower nets and epochs (reported as reduced, on stand-in data).

Each cell is the mean over seeds with its standard error; diverged runs are left out and counted per cell
(a cell whose runs all diverged is None, and so is every comparison it enters).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax.numpy as jnp
import numpy as np
import pandas as pd
from cifar_resnet import cifar_resnet
from hayou_common import Epochs, accuracies_at_epochs, cell_summary, weight_estimates

from ntkrepro.checks import bad, increasing, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.nets import resnet
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, load_split, main
from ntkrepro.train import step_decay_schedule

VARIANTS = ("standard", "scaled")
EPOCH_TAGS = ("early", "late")


CIFAR_ACTIVATIONS = 16 * 32 * 32  # the widest activation of a CIFAR ResNet per image (16 channels, 32 x 32)


@dataclass
class ResNetModel:
    """``params.model``: the nets compared (``kind``), each at every depth, standard and scaled."""

    kind: Literal["fc_resnet", "cifar_resnet"] = param(doc="fully connected ResNet (eqs. 12-13) or CIFAR ResNet")
    name: str = param(check=lambda v: None if v else "must be a non-empty name (metrics are named by it)")
    width: int = param(ge=1, doc="fc_resnet only")
    sigma_w2: float = param(gt=0, doc="fc_resnet only")
    sigma_b2: float = param(ge=0, doc="fc_resnet only")
    batch_norm: bool = param(doc="cifar_resnet only")


@dataclass
class Params:
    """``params`` of Table 2 (conf/experiment/hayou2020/table2.yaml)."""

    model: ResNetModel = param()
    depths: list[int] = param(min_len=1, ge=2, distinct=True, doc="ResNet depths (>= 2: one residual block)")
    paper_depths: list[int] = param(min_len=1, ge=1, distinct=True, doc="the paper's depths (cells left None)")
    epochs: Epochs = param()
    lr: float = param(gt=0)
    lr_decay_epochs: list[int] = param(ge=1, check=increasing, doc="epochs after which lr is multiplied by the factor")
    lr_decay_factor: float = param(gt=0, le=1)
    batch_size: int = param(ge=1)
    n_seeds: int = param(ge=1)

    def check(self):
        if self.lr_decay_epochs and self.lr_decay_epochs[-1] >= self.epochs.late:
            raise bad("params.lr_decay_epochs", f"every value must be < params.epochs.late = {self.epochs.late} "
                      "(a decay at or after the last epoch never acts)", self.lr_decay_epochs)
        if self.model.kind == "cifar_resnet":
            for i, d in enumerate(self.depths):
                if d < 8 or (d - 2) % 6:
                    raise bad(f"params.depths[{i}]", "must be 6n + 2 >= 8 for a CIFAR ResNet (20, 32, 44, 50, 56, "
                              "104, ...)", d)

    def check_config(self, cfg) -> None:
        """Sizes that depend on ``data`` and ``precision``: a batch no larger than the training set, and the
        weights or activations of the deepest net against this machine's memory."""
        n_train = cfg.data.n_train
        if n_train is not None and n_train < self.batch_size:
            raise bad("params.batch_size", f"must be <= data.n_train = {n_train} (an epoch is n_train // "
                      "batch_size steps)", self.batch_size)
        itemsize = 4 if cfg.precision == "float32" else 8
        deepest = max(self.depths)
        if self.model.kind == "fc_resnet":
            refuse_oversized(weight_estimates(self.model.width, deepest, itemsize=itemsize,
                                              width_path="params.model.width", depth_path="params.depths",
                                              what="deepest ResNet"))
        else:
            refuse_oversized([("params.depths", deepest, itemsize * self.batch_size * CIFAR_ACTIVATIONS, 1,
                               f"the activations of the deepest ResNet kept for backpropagation (depth x batch_size "
                               f"x 16 x 32 x 32, {cfg.precision})")])


def build_net(model, *, depth: int, branch_scale: str, num_classes: int, dtype):
    if model.kind == "cifar_resnet":
        return cifar_resnet(
            depth=depth,
            num_classes=num_classes,
            branch_scale=branch_scale,
            batch_norm=bool(model.batch_norm),
            dtype=dtype,
        )
    if model.kind == "fc_resnet":
        if int(model.width) < num_classes:  # the data read (a stand-in or not) decides: checked once it is
            raise bad("params.model.width", f"must be >= the number of classes of the data ({num_classes}): the "
                      "outputs are units of the last layer", int(model.width))
        return resnet(
            depth=depth,
            width=int(model.width),
            out_dim=num_classes,
            activation="relu",
            sigma_w2=float(model.sigma_w2),
            sigma_b2=float(model.sigma_b2),
            branch_scale=branch_scale,
            parameterization="ntk",
            dtype=dtype,
        )
    raise ValueError(f"params.model.kind must be 'cifar_resnet' or 'fc_resnet', got {model.kind!r}")


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    early, late = int(p.epochs.early), int(p.epochs.late)
    dtype = jnp.float32 if cfg.precision == "float32" else jnp.float64
    train_set, test_set = load_split(cfg, "train"), load_split(cfg, "test")
    x, y = np.asarray(train_set.x, np.float32), np.asarray(train_set.y, np.int32)
    x_test, y_test = np.asarray(test_set.x, np.float32), np.asarray(test_set.y, np.int32)
    if p.model.kind == "fc_resnet":
        x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    steps_per_epoch = len(x) // int(p.batch_size)
    schedule = step_decay_schedule(
        float(p.lr), boundaries=[int(e) * steps_per_epoch for e in p.lr_decay_epochs], factor=float(p.lr_decay_factor)
    )
    rows, metrics, notes, uncertainty, diverged = [], {}, [], {}, {}
    jobs = [(int(d), v) for d in p.depths for v in VARIANTS]
    for depth, variant in progress(jobs, desc="table2", enabled=cfg.progress):
        net = build_net(p.model, depth=depth, branch_scale=variant, num_classes=train_set.num_classes, dtype=dtype)
        label = f"{p.model.name}{depth}"
        accs = accuracies_at_epochs(net, (x, y, x_test, y_test), seed=int(cfg.seed), n_seeds=int(p.n_seeds),
                                    epochs=(early, late), batch_size=int(p.batch_size), learning_rate=schedule,
                                    label=f"depth {depth} {variant}", notes=notes)
        for tag, epochs, values in zip(EPOCH_TAGS, (early, late), accs, strict=True):
            cell = cell_summary(values)
            mean, std = cell["mean"], cell["std"]
            name = f"acc_{label}_{variant}_{tag}"
            metrics[name] = mean
            metrics[f"std_{label}_{variant}_{tag}"] = std
            if cell["estimate"] is not None:
                uncertainty[name] = cell["estimate"].record()
            diverged[name] = {"diverged": cell["diverged"], "runs": cell["runs"]}
            rows.append(
                {
                    "model": label,
                    "variant": variant,
                    "epoch": epochs,
                    "test_acc_mean": mean,
                    "test_acc_std": std,
                    "n_seeds": len(values),
                    "diverged": cell["diverged"],
                }
            )
    for depth in p.depths:
        label = f"{p.model.name}{int(depth)}"
        for tag in EPOCH_TAGS:
            scaled, standard = metrics[f"acc_{label}_scaled_{tag}"], metrics[f"acc_{label}_standard_{tag}"]
            metrics[f"{label}_{tag}_scaled_ge_standard"] = (
                None if scaled is None or standard is None else bool(scaled >= standard))
    deepest = f"{p.model.name}{int(max(p.depths))}"
    metrics["deepest_late_scaled_ge_standard"] = metrics[f"{deepest}_late_scaled_ge_standard"]
    metrics["deepest_early_scaled_ge_standard"] = metrics[f"{deepest}_early_scaled_ge_standard"]
    late = [metrics[f"{p.model.name}{int(d)}_late_scaled_ge_standard"] for d in p.depths]
    metrics["all_late_scaled_ge_standard"] = None if None in late else all(late)
    for key, cells in (("deepest_late_scaled_ge_standard", [deepest]), ("deepest_early_scaled_ge_standard", [deepest]),
                       ("all_late_scaled_ge_standard", [f"{p.model.name}{int(d)}" for d in p.depths])):
        tag = "early" if "early" in key else "late"
        names = [f"acc_{c}_{v}_{tag}" for c in cells for v in VARIANTS]
        diverged[key] = {"diverged": sum(diverged[n]["diverged"] for n in names),
                         "runs": sum(diverged[n]["runs"] for n in names)}
    for depth in p.paper_depths:  # the paper's cells, not measured at the reduced scales
        for variant in VARIANTS:
            for tag in EPOCH_TAGS:
                metrics.setdefault(f"acc_resnet{int(depth)}_{variant}_{tag}", None)
    table = pd.DataFrame(rows)
    return StageResult(
        metrics=metrics,
        uncertainty=uncertainty,
        diverged=diverged,
        data=train_set.provenance,
        sizes={
            "n_train": len(x),
            "n_test": len(x_test),
            "depths": [int(d) for d in p.depths],
            "epochs": [early, late],
            "n_seeds": int(p.n_seeds),
            "model": p.model.kind,
        },
        seeds=[int(cfg.seed)],
        tables={"table2": table},
        figures={"table2": _figure(table, paper_values(Path(__file__).with_name("claims.yaml"), cfg.artifact))},
        notes=notes + [f"test data: {test_set.provenance}"],
    )


def _figure(table: pd.DataFrame, published: dict):
    fig, axes = figure(1, 2, height=2.6)
    for ax, (k, tag) in zip(axes[0], enumerate(EPOCH_TAGS), strict=True):
        epoch = sorted(set(table.epoch))[k]
        sub = table[table.epoch == epoch]
        models = list(dict.fromkeys(sub.model))
        for j, variant in enumerate(VARIANTS):
            rows = sub[sub.variant == variant].set_index("model").loc[models]
            pos = np.arange(len(models)) + 0.4 * j
            ax.bar(pos, rows.test_acc_mean.astype(float), width=0.4, yerr=rows.test_acc_std.astype(float),
                   label=variant)
            marks = [published.get(f"acc_{m}_{variant}_{tag}") for m in models]
            ax.plot(
                pos,
                [v if v is not None else np.nan for v in marks],
                "k_",
                markersize=8,
                label="paper" if j == 0 else None,
            )
        ax.set_xticks(np.arange(len(models)) + 0.2, models)
        ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"epoch {epoch}")
        ax.legend(fontsize=6)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
