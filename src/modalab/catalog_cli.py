"""``modalab recipes list | show NAME | cp NAME DEST`` and ``modalab explain KEY``, added to the
parser by ``cli.py``."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_recipes(args: argparse.Namespace) -> int:
    from modalab.recipe_catalog import copy_recipe, find_recipe, list_recipes

    if args.recipes_command == "list":
        infos = list_recipes()
        width = max(len(r.name) for r in infos)
        for r in infos:
            claim = r.claim if len(r.claim) <= 100 else r.claim[:99] + "…"
            print(f"  {r.name.ljust(width)}  {claim}")
        print(f"\n{len(infos)} recipes; `modalab recipes show NAME` prints one, "
              f"`modalab recipes cp NAME DEST` copies it to edit")
    elif args.recipes_command == "show":
        print(find_recipe(args.name).read_text(encoding="utf-8"), end="")
    else:
        dest = copy_recipe(args.name, Path(args.dest), force=args.force)
        print(f"copied {args.name} to {dest}; run it with: modalab run {dest}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from modalab.explain import explain

    print(explain(args.key))
    return 0


def add_catalog_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recipes", help="the recipes shipped with modalab: list | show NAME | cp NAME DEST")
    rs = r.add_subparsers(dest="recipes_command", required=True)
    rs.add_parser("list", help="every packaged recipe with the claim it tests")
    show = rs.add_parser("show", help="print a packaged recipe")
    show.add_argument("name", help="e.g. clip_digits or chapter5/temperature")
    cp = rs.add_parser("cp", help="copy a packaged recipe to edit (base: recipes merged in)")
    cp.add_argument("name", help="e.g. clip_digits")
    cp.add_argument("dest", help="file or folder to copy to")
    cp.add_argument("--force", action="store_true", help="overwrite DEST")
    r.set_defaults(fn=cmd_recipes)
    e = sub.add_parser("explain", help="a recipe section's fields, types, defaults and descriptions")
    e.add_argument("key", help="train, train.steps, model.two_tower, loss.info_nce, data.digits, eval.contrastive, ...")
    e.set_defaults(fn=cmd_explain)
