"""Hayou et al. 2020, Table 1: test accuracy of deep fully connected nets (NTK parameterization, SGD,
batch 128, lr 1e-2) with 7 activations, each initialized on its EOC where it has one, after an early and
a late number of epochs (paper: 10 and 100), on MNIST and CIFAR-10 (stand-ins at the reduced scales).

PReLU (He et al. 2015) is a leaky ReLU whose negative slope is learned, one slope per layer, initialized
at ``init_slope``; its net (``prelu_fc``) takes ``ntkrepro.nets.fc``'s parameters, adds the slopes and has
its own forward pass, because the library's nets take fixed activations. The other six use
``ntkrepro.nets.fc``.

Each cell is the mean over seeds with its standard error (``ntkrepro.stats.mean_se``); a run whose loss
becomes non-finite is left out of the cells it did not reach and counted (``diverged``), a cell whose runs
all diverged is None. The "stuck at chance" claims read the raw distance of Softplus and Sigmoid from chance
(the registry's tolerance decides what "~ chance" is).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from hayou_common import Epochs, accuracies_at_epochs, cell_summary, distinct, weight_estimates
from omegaconf import OmegaConf

from ntkrepro.checks import activation, bad, build, param, refuse_oversized
from ntkrepro.claims import paper_values
from ntkrepro.config import DataSchema
from ntkrepro.kernels.deep import eoc_point
from ntkrepro.nets import Network, fc
from ntkrepro.nets.core import check_input, effective_weight, readout_mask_fn, trainable_mask_fn
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, load_split, main

EPOCH_TAGS = ("early", "late")
ORDERINGS = ("classS_beats_relu_like", "prelu_ge_relu", "softplus_sigmoid_from_chance")


def _activation_or_prelu(value) -> str | None:
    what = None if value == "prelu" else activation(value)
    return f"{what} or prelu" if what else None


@dataclass
class Variances:
    """A per-dataset override of a model's initialization (``by_dataset``)."""

    sigma_b: float | None = param(None, ge=0)
    sigma_w: float | None = param(None, gt=0)


@dataclass
class Model:
    """One row of Table 1."""

    name: str = param(check=lambda v: None if v else "must be a non-empty name (metrics are named by it)")
    activation: str = param(check=_activation_or_prelu, doc="a registered activation, or prelu")
    sigma_b: float = param(ge=0)
    sigma_w: float | None = param(None, gt=0, doc="null: the EOC value (ReLU-like, and PReLU's initial slope)")
    init_slope: float | None = param(None, doc="prelu only: the initial negative slope")
    by_dataset: dict | None = param(None, doc="{dataset: {sigma_w, sigma_b}} overrides")


@dataclass
class Params:
    """``params`` of Table 1 (conf/experiment/hayou2020/table1.yaml)."""

    datasets: dict = param(doc="{key: data config} of every dataset of the table (ntkrepro.config.DataSchema)")
    run_datasets: list[str] = param(min_len=1, distinct=True, doc="the keys of datasets run at this scale")
    depth: int = param(ge=2, doc="weight layers (>= 2: a hidden layer for the activation to act on)")
    width: int = param(ge=1)
    epochs: Epochs = param()
    batch_size: int = param(ge=1)
    lr: float = param(gt=0)
    n_seeds: int = param(ge=1)
    models: list[Model] = param(min_len=1, doc="the rows (distinct names)")

    def check(self):
        if not self.datasets:
            raise bad("params.datasets", "needs at least one dataset", self.datasets)
        data = {k: build(DataSchema, v, f"params.datasets.{k}") for k, v in self.datasets.items()}
        for i, key in enumerate(self.run_datasets):
            if key not in data:
                raise bad(f"params.run_datasets[{i}]", f"must be a key of params.datasets ({', '.join(data)})", key)
            n = data[key].n_train
            if n is not None and n < self.batch_size:
                raise bad("params.batch_size", f"must be <= params.datasets.{key}.n_train = {n} (an epoch is "
                          "n_train // batch_size steps)", self.batch_size)
        refuse_oversized(weight_estimates(self.width, self.depth, itemsize=8, width_path="params.width",
                                          depth_path="params.depth", what="net"))
        distinct("params.models", [m.name for m in self.models], "names", "metrics are named by them")
        for i, m in enumerate(self.models):
            path = f"params.models[{i}]"
            if m.activation == "prelu" and m.init_slope is None:
                raise bad(f"{path}.init_slope", "is required for prelu (the initial negative slope)", None)
            if m.activation != "prelu" and m.init_slope is not None:
                raise bad(f"{path}.init_slope", f"applies to prelu only (this row is {m.activation})", m.init_slope)
            for key, value in (m.by_dataset or {}).items():
                if key not in data:
                    raise bad(f"{path}.by_dataset.{key}", f"must be a key of params.datasets ({', '.join(data)})",
                              value)
                build(Variances, value, f"{path}.by_dataset.{key}")
            for key in self.run_datasets:  # sigma_w null: the EOC value must exist (closed form if ReLU-like)
                try:
                    init_variances(dataclasses.asdict(m), key)
                except ValueError as err:
                    raise bad(f"{path}.sigma_w", f"null (the EOC value), but on {key}: {err}", None) from None


def prelu_fc(
    *, depth: int, width: int, out_dim: int, sigma_w2: float, sigma_b2: float, init_slope: float, dtype=jnp.float64
) -> Network:
    """``ntkrepro.nets.fc``'s net (NTK parameterization, eq. 10) with PReLU: phi_l(x) = x (x > 0),
    a_l x (x <= 0), one trainable slope a_l per hidden layer, a_l = ``init_slope`` at initialization."""
    if depth < 2 or width < 1 or out_dim < 1:
        raise ValueError(f"prelu_fc needs depth >= 2, width >= 1, out_dim >= 1; got {depth}, {width}, {out_dim}")
    base = fc(depth=depth, width=width, out_dim=out_dim, sigma_w2=sigma_w2, sigma_b2=sigma_b2, dtype=dtype)
    use_bias = sigma_b2 > 0
    bias_scale = math.sqrt(sigma_b2)

    def init_fn(key, input_shape):  # the FC net's parameters plus a slope per hidden layer
        params = base.init_fn(key, input_shape)
        return [layer if i == 0 else {**layer, "a": jnp.asarray(init_slope, dtype)} for i, layer in enumerate(params)]

    def apply_fn(params, x):
        check_input(x, (params[0]["w"].shape[0],), "prelu_fc")
        h = jnp.asarray(x, dtype)
        for i, layer in enumerate(params):
            if i > 0:
                h = jnp.where(h > 0, h, layer["a"] * h)
            w = layer["w"]
            h = h @ effective_weight(w, math.sqrt(sigma_w2 / w.shape[0]), "ntk")
            if use_bias:
                h = h + effective_weight(layer["b"], bias_scale, "ntk")
        return h

    return Network(init_fn, apply_fn, trainable_mask_fn(depth, frozenset()), readout_mask_fn(depth), depth, out_dim)


def init_variances(entry, dataset: str) -> tuple[float, float]:
    """(sigma_w2, sigma_b2) of an activation entry: its sigma_b, sigma_w (null sigma_w = the EOC value of
    a ReLU-like activation), with per-dataset overrides under ``by_dataset``."""
    spec = dict(entry)
    spec.update(dict(entry.get("by_dataset") or {}).get(dataset) or {})
    sigma_b = float(spec["sigma_b"])
    if spec.get("sigma_w") is None:
        base = "leaky_relu:" + str(spec["init_slope"]) if spec["activation"] == "prelu" else spec["activation"]
        return eoc_point(base, sigma_b2=sigma_b**2).sigma_w2, sigma_b**2
    return float(spec["sigma_w"]) ** 2, sigma_b**2


def build_net(entry, *, depth: int, width: int, out_dim: int, sigma_w2: float, sigma_b2: float) -> Network:
    if entry.activation == "prelu":
        return prelu_fc(
            depth=depth,
            width=width,
            out_dim=out_dim,
            sigma_w2=sigma_w2,
            sigma_b2=sigma_b2,
            init_slope=float(entry.init_slope),
        )
    return fc(
        depth=depth,
        width=width,
        out_dim=out_dim,
        activation=entry.activation,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        parameterization="ntk",
    )


def _flat(ds):
    return np.asarray(ds.x, dtype=np.float64).reshape(len(ds.x), -1), np.asarray(ds.y, dtype=np.int32)


def run(cfg) -> StageResult:
    p = cfg.params  # checked against Params before run
    early, late = int(p.epochs.early), int(p.epochs.late)
    rows, metrics, provenance, notes, n_train = [], {}, {}, [], {}
    uncertainty, diverged = {}, {}
    for dataset in p.datasets:
        if dataset not in p.run_datasets:  # not run at this scale: the claims read None
            for entry in p.models:
                for tag in EPOCH_TAGS:
                    metrics[f"acc_{dataset}_{entry.name}_{tag}"] = None
            for tag in EPOCH_TAGS:
                for what in ORDERINGS:
                    metrics[f"{dataset}_{tag}_{what}"] = None
            continue
        sub = OmegaConf.merge(cfg, {"data": p.datasets[dataset]})
        train_set, test_set = load_split(sub, "train"), load_split(sub, "test")
        provenance[dataset] = train_set.provenance
        x, y = _flat(train_set)
        x_test, y_test = _flat(test_set)
        n_train[dataset] = len(x)
        chance = 100.0 / train_set.num_classes
        for entry in progress(list(p.models), desc=f"table1 {dataset}", enabled=cfg.progress):
            sigma_w2, sigma_b2 = init_variances(entry, dataset)
            net = build_net(
                entry,
                depth=int(p.depth),
                width=int(p.width),
                out_dim=train_set.num_classes,
                sigma_w2=sigma_w2,
                sigma_b2=sigma_b2,
            )
            accs = accuracies_at_epochs(net, (x, y, x_test, y_test), seed=int(cfg.seed), n_seeds=int(p.n_seeds),
                                        epochs=(early, late), batch_size=int(p.batch_size),
                                        learning_rate=float(p.lr), label=f"{dataset}/{entry.name}", notes=notes)
            for tag, epochs, values in zip(EPOCH_TAGS, (early, late), accs, strict=True):
                cell = cell_summary(values)
                mean, std = cell["mean"], cell["std"]
                name = f"acc_{dataset}_{entry.name}_{tag}"
                metrics[name] = mean
                metrics[f"std_{dataset}_{entry.name}_{tag}"] = std
                if cell["estimate"] is not None:
                    uncertainty[name] = cell["estimate"].record()
                diverged[name] = {"diverged": cell["diverged"], "runs": cell["runs"]}
                rows.append(
                    {
                        "dataset": dataset,
                        "data_used": train_set.provenance.name,
                        "activation": entry.name,
                        "sigma_w": math.sqrt(sigma_w2),
                        "sigma_b": math.sqrt(sigma_b2),
                        "epoch": epochs,
                        "test_acc_mean": mean,
                        "test_acc_std": std,
                        "n_seeds": len(values),
                        "diverged": cell["diverged"],
                    }
                )
        for tag in EPOCH_TAGS:
            metrics.update(_orderings(metrics, uncertainty, diverged, dataset, tag, chance))
    table = pd.DataFrame(rows)
    return StageResult(
        metrics=metrics,
        uncertainty=uncertainty,
        diverged={k: v for k, v in diverged.items() if k in metrics},
        data=_combined_provenance(provenance),
        sizes={
            "depth": int(p.depth),
            "width": int(p.width),
            "n_train": n_train,
            "epochs": [early, late],
            "n_seeds": int(p.n_seeds),
        },
        seeds=[int(cfg.seed)],
        tables={"table1": table},
        figures={"table1": _figure(table, paper_values(Path(__file__).with_name("claims.yaml"), cfg.artifact))},
        notes=notes,
    )


def _orderings(metrics: dict, uncertainty: dict, diverged: dict, dataset: str, tag: str, chance: float) -> dict:
    """The paper's orderings of Sec. 6.2 as booleans over the mean accuracies (None when a cell they compare
    has no run left), and the largest distance of Softplus / Sigmoid from chance (percentage points) with
    the standard error of that cell."""

    def acc(name):  # None: not measured (a row left out of params.models, or every run diverged)
        return metrics.get(f"acc_{dataset}_{name}_{tag}")

    prefix = f"{dataset}_{tag}"
    out = {}
    class_s, relu_like = [acc("elu"), acc("tanh")], [acc("relu"), acc("lrelu_0p01"), acc("prelu")]
    out[f"{prefix}_{ORDERINGS[0]}"] = (
        None if None in class_s + relu_like else bool(min(class_s) > max(relu_like)))
    out[f"{prefix}_{ORDERINGS[1]}"] = None if None in (acc("prelu"), acc("relu")) else bool(acc("prelu") >= acc("relu"))
    name = f"{prefix}_{ORDERINGS[2]}"
    cells = [f"acc_{dataset}_{a}_{tag}" for a in ("softplus", "sigmoid")]
    if any(metrics.get(c) is None for c in cells):
        out[name] = None
    else:
        far = max(cells, key=lambda c: abs(metrics[c] - chance))
        out[name] = abs(metrics[far] - chance)
        if far in uncertainty:
            uncertainty[name] = uncertainty[far]
        diverged[name] = {"diverged": sum(diverged[c]["diverged"] for c in cells),
                          "runs": sum(diverged[c]["runs"] for c in cells)}
    return out


def _combined_provenance(provenance: dict) -> dict:
    """One provenance record for the datasets used (names joined; stand-ins listed)."""
    if not provenance:
        return None
    items = list(provenance.items())
    substituted = [f"{p.substituted_for}" for _, p in items if p.substituted_for]
    return {
        "name": ", ".join(f"{p.name} (for {k})" for k, p in items),
        "source": "; ".join(str(p.source) for _, p in items),
        "sha256": "; ".join(str(p.sha256) for _, p in items),
        "substituted_for": ", ".join(substituted) if substituted else None,
    }


def _figure(table: pd.DataFrame, published: dict):
    datasets = list(dict.fromkeys(table.dataset)) or ["none"]
    fig, axes = figure(1, len(datasets), height=2.6)
    for ax, dataset in zip(np.atleast_2d(axes)[0], datasets, strict=True):
        sub = table[table.dataset == dataset]
        names = list(dict.fromkeys(sub.activation))
        for k, epoch in enumerate(sorted(set(sub.epoch))):
            rows = sub[sub.epoch == epoch].set_index("activation").loc[names]
            pos = np.arange(len(names)) + 0.4 * k
            ax.bar(pos, rows.test_acc_mean.astype(float), width=0.4, yerr=rows.test_acc_std.astype(float),
                   label=f"epoch {epoch}")
            tag = EPOCH_TAGS[k]
            marks = [published.get(f"acc_{dataset}_{n}_{tag}") for n in names]
            ax.plot(
                pos,
                [m if m is not None else np.nan for m in marks],
                "k_",
                markersize=8,
                label="paper (epochs 10 / 100)" if k == 0 else None,
            )
        ax.set_xticks(np.arange(len(names)) + 0.2, names, rotation=45, fontsize=6)
        ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"{dataset} ({sub.data_used.iloc[0]})")
        ax.legend(fontsize=6)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
