"""python -m foo_sdk: the Foo API from a shell.

    python -m foo_sdk products                 # the catalogue
    python -m foo_sdk product 3
    python -m foo_sdk orders
    python -m foo_sdk create-order 3:2 5:1     # product 3 twice, product 5 once
    python -m foo_sdk token                    # an access token, e.g. for curl

Credentials: --credentials FILE, else the FOO_* environment variables when FOO_CLIENT_ID is set,
else ./foo-credentials.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .client import FooClient
from .errors import FooError

DEFAULT_CREDENTIALS_FILE = "foo-credentials.json"


def _line(text: str) -> tuple[int, int]:
    product, separator, quantity = text.partition(":")
    try:
        return int(product), int(quantity) if separator else 1
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PRODUCT_ID or PRODUCT_ID:QUANTITY") from error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m foo_sdk", description="Call the Foo API.")
    parser.add_argument("--version", action="version", version=f"foo-sdk {__version__}")
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help=(
            "credentials file (default: the FOO_* variables if FOO_CLIENT_ID is set, "
            f"else ./{DEFAULT_CREDENTIALS_FILE})"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("products", help="list the catalogue")
    product = commands.add_parser("product", help="show one product")
    product.add_argument("product_id", type=int, metavar="ID")
    commands.add_parser("orders", help="list your orders")
    order = commands.add_parser("order", help="show one of your orders")
    order.add_argument("order_id", type=int, metavar="ID")
    create = commands.add_parser("create-order", help="place an order")
    create.add_argument("lines", nargs="+", type=_line, metavar="PRODUCT_ID[:QUANTITY]")
    commands.add_parser("token", help="print an access token")
    return parser


def _client(credentials: str | None) -> FooClient:
    if credentials:
        return FooClient.from_credentials_file(credentials)
    if os.environ.get("FOO_CLIENT_ID"):
        return FooClient.from_env()
    return FooClient.from_credentials_file(Path.cwd() / DEFAULT_CREDENTIALS_FILE)


def _table(rows: list[dict], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[str(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [
        max([len(title)] + [len(line[index]) for line in cells]) for index, (_, title) in enumerate(columns)
    ]
    lines = ["  ".join(title.ljust(width) for (_, title), width in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


PRODUCT_COLUMNS = [
    ("id", "ID"),
    ("sku", "SKU"),
    ("name", "NAME"),
    ("price", "PRICE"),
    ("currency", ""),
    ("available", "AVAILABLE"),
]
ORDER_COLUMNS = [
    ("id", "ID"),
    ("created", "CREATED"),
    ("status", "STATUS"),
    ("total", "TOTAL"),
    ("currency", ""),
]


def _order_text(order: dict) -> str:
    header = (
        f"Order {order['id']} ({order['status']}, {order['created']}): {order['total']} {order['currency']}"
    )
    lines = _table(
        order["lines"],
        [
            ("product", "PRODUCT"),
            ("sku", "SKU"),
            ("quantity", "QTY"),
            ("unit_price", "UNIT"),
            ("line_total", "TOTAL"),
        ],
    )
    return f"{header}\n{lines}"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        with _client(arguments.credentials) as client:
            if arguments.command == "products":
                result = client.list_products()
                text = _table(result, PRODUCT_COLUMNS)
            elif arguments.command == "product":
                result = client.get_product(arguments.product_id)
                text = _table([result], PRODUCT_COLUMNS) + f"\n\n{result['description']}"
            elif arguments.command == "orders":
                result = client.list_orders()
                text = _table(result, ORDER_COLUMNS) if result else "No orders yet."
            elif arguments.command == "order":
                result = client.get_order(arguments.order_id)
                text = _order_text(result)
            elif arguments.command == "create-order":
                result = client.create_order(arguments.lines)
                text = _order_text(result)
            else:
                result = {"access_token": client.access_token(), "scope": client.token_scope}
                text = result["access_token"]
    except FooError as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (128 + SIGINT, as a shell says)
        unknown = (
            " (the order may have been placed: see `orders`)" if arguments.command == "create-order" else ""
        )
        print(f"error: interrupted{unknown}", file=sys.stderr)
        return 130
    try:
        print(json.dumps(result, indent=2) if arguments.json else text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`... | head`): no traceback, and nothing more written to the closed
        # pipe when Python flushes stdout at exit (the docs' "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0
