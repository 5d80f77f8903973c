#!/usr/bin/env python3
"""Renders a kustomization of deploy/kubernetes into one JSON document, {"items": [...]},
without kustomize: our kustomizations use only `resources` (files and directories), so
rendering is reading them in order, recursively. Any other kustomize feature is refused,
so that what CI validates is exactly what `kubectl apply -k` applies.

Usage: render.py DIR [DIR...]   (the items of every DIR, in order, to stdout)
"""
import json
import pathlib
import sys

import yaml

ALLOWED_KEYS = {"apiVersion", "kind", "resources"}


def render(directory: pathlib.Path, seen: set) -> list:
    directory = directory.resolve()
    if directory in seen:
        sys.exit(f"render: {directory} is included twice")
    seen.add(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        sys.exit(f"render: {directory} has no kustomization.yaml")
    kustomization = yaml.safe_load(kfile.read_text()) or {}
    extra = set(kustomization) - ALLOWED_KEYS
    if extra:
        sys.exit(f"render: {kfile} uses {sorted(extra)}; only `resources` is supported here")
    items = []
    for entry in kustomization.get("resources") or []:
        path = directory / entry
        if path.is_dir():
            items.extend(render(path, seen))
        elif path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    items.append(doc)
        else:
            sys.exit(f"render: {kfile} names {entry}, which does not exist")
    return items


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    items = []
    for arg in sys.argv[1:]:
        items.extend(render(pathlib.Path(arg), set()))
    json.dump({"items": items}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
