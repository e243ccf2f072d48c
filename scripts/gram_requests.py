"""The workflow's edge of the Gram tile jobs: which stages declare their Gram matrices, and the request files
of a stage's Grams (rules/gram_stages.smk runs this; the library, ntkrepro.gram, knows no stage).

A stage declares its Grams once, at the top level of its script:
``load(cfg)`` the data it reads and ``grams(cfg, data)`` every Gram it computes, a mapping of tuples of
``ntkrepro.gram.GramRequest`` in the order computed. The stage's own ``run`` iterates over that mapping, and
this script writes the same requests (``ntkrepro.gram.request_gram``: named by the hash the stage's cache
lookup uses), so tile jobs fill exactly the cache the stage reads and the stage then computes no tile.

    python scripts/gram_requests.py --cache-root results/cache --out requests.json \\
        experiment=<paper>/<artifact> scale=paper [more Hydra overrides]
    python scripts/gram_requests.py --list          # the stages that declare Grams
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gram_stages(root: Path = ROOT) -> list[str]:
    """``<paper>/<artifact>`` of every stage (a script with a conf/experiment/<paper>/<artifact>.yaml) that
    defines ``grams`` at its top level, read from the source (nothing imported: no JAX at DAG time)."""
    found = []
    for config in sorted((root / "conf" / "experiment").glob("*/*.yaml")):
        script = root / "experiments" / config.parent.name / f"{config.stem}.py"
        if script.is_file() and any(isinstance(node, ast.FunctionDef) and node.name == "grams"
                                    for node in ast.parse(script.read_text()).body):
            found.append(f"{config.parent.name}/{config.stem}")
    return found


def declared_requests(experiment: str, overrides: list[str]) -> list:
    """Every GramRequest the stage ``experiment`` declares under its composed config (after the stage's own
    checks, before any data is read), in its order."""
    from ntkrepro import config as config_mod
    from ntkrepro.stage import stage_module

    module = stage_module(experiment)
    if not callable(getattr(module, "grams", None)) or not callable(getattr(module, "load", None)):
        raise ValueError(f"error: experiment: {experiment} declares no Grams (no top-level load and grams)")
    cfg = config_mod.compose(experiment, overrides)
    config_mod.validate(cfg, module.Params)
    return [request for group in module.grams(cfg, module.load(cfg)).values() for request in group]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="print the stages that declare Grams")
    parser.add_argument("--cache-root", help="the Gram cache the stage reads (ntkrepro.config.gram_cache_root)")
    parser.add_argument("--out", help="JSON file: the request names, in the stage's order")
    parser.add_argument("overrides", nargs="*", help="experiment=<paper>/<artifact> and Hydra overrides")
    a = parser.parse_args(argv)
    if a.list:
        print("\n".join(gram_stages()))
        return 0
    from ntkrepro.gram import request_gram
    from ntkrepro.io import atomic_write_json

    try:
        experiment = next((o.split("=", 1)[1] for o in a.overrides if o.startswith("experiment=")), None)
        if experiment is None or not a.cache_root or not a.out:
            raise ValueError("error: the requests need --cache-root, --out and experiment=<paper>/<artifact>")
        requests = declared_requests(experiment, [o for o in a.overrides if not o.startswith("experiment=")])
        names = [request_gram(a.cache_root, request).stem for request in requests]
    except (ValueError, OSError) as err:
        print(str(err) if str(err).startswith("error: ") else f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(a.out, {"requests": names})
    print("\n".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
