"""Reading a whole listing from the Metal API's offset pages, or failing: a caller that decides "no device, create
one" on a short list makes a duplicate that bills.

Pages are followed by meta.next (or meta.last_page); a listing whose pages report different totals, or whose count
disagrees with them, is read once more and then refused. `fetch(page)` does the HTTP call for one page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from hooks.equinix.answers import header_int
from hooks.equinix.errors import TransportError, UnexpectedResponse
from hooks.redact import shorten

MAX_PAGES = 1000  # a listing longer than this is a server defect, not a project

Fetch = Callable[[int], dict]


def read_all(operation: str, key: str, fetch: Fetch, secrets: Sequence[str]) -> list[dict]:
    """Every item under `key` on every page, read again once if the listing changed while it was read.

    Paging is by offset, so a device created or deleted while we read can shift another one across a page
    boundary and out of sight. When the pages report different `meta.total`s, or the count we collected disagrees
    with it, the listing is read once more; if it is still inconsistent the call fails.
    """
    for attempt in (1, 2):
        items, totals = _read_once(operation, key, fetch, secrets)
        if not totals or totals == {len(items)}:
            return items
        if attempt == 2:
            counted = "/".join(str(t) for t in sorted(totals))
            raise UnexpectedResponse(
                f"{operation} failed: the listing changed while it was read ({len(items)} items, the API counts "
                f"{counted}); refusing to return an incomplete listing",
                operation=operation,
                status=200,
            )
    raise AssertionError("unreachable")


def _read_once(operation: str, key: str, fetch: Fetch, secrets: Sequence[str]) -> tuple[list[dict], set[int]]:
    """One pass over every page, with the `meta.total` each page reported (they differ if the list changed)."""
    items: list[dict] = []
    seen_ids: set[str] = set()
    fetched: set[int] = set()
    totals: set[int] = set()
    page: int | None = 1
    while page is not None:
        if page in fetched or len(fetched) >= MAX_PAGES:
            raise UnexpectedResponse(
                f"{operation} failed: the API's pagination does not end (page {page} again or over {MAX_PAGES} "
                "pages); refusing to return an incomplete listing",
                operation=operation,
            )
        fetched.add(page)
        body = fetch(page)
        page_items = body.get(key)
        if not isinstance(page_items, list):
            raise TransportError(f"{operation} failed: the answer has no {key!r} list", operation=operation, status=200)
        fresh, repeated = _collect(operation, page, page_items, items, seen_ids, secrets)
        if repeated and not fresh:
            # A server that ignores `page` hands back page 1 forever; what we have is not the whole list.
            raise UnexpectedResponse(
                f"{operation} failed: page {page} repeated earlier items only; the API seems to ignore paging",
                operation=operation,
            )
        meta = body.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("total"), int):
            totals.add(meta["total"])
        # An empty page ends the listing only when the API says it is the last one.
        page = next_page(meta, page)
    return items, totals


def _collect(operation: str, page: int, page_items: list, items: list[dict], seen_ids: set[str],
             secrets: Sequence[str]) -> tuple[int, int]:
    """Append the page's items not seen before to `items`; (how many were new, how many repeated)."""
    fresh = repeated = 0
    for item in page_items:
        if not isinstance(item, dict):
            # It may have been the very device a caller looks for; a listing without it is incomplete.
            raise UnexpectedResponse(
                f"{operation} failed: page {page} holds an entry that is not an object "
                f"({shorten(repr(item), 40, secrets, collapse=True)}); "
                "refusing to return an incomplete listing",
                operation=operation,
                status=200,
            )
        item_id = item.get("id")
        if isinstance(item_id, str):
            if item_id in seen_ids:
                repeated += 1
                continue
            seen_ids.add(item_id)
        items.append(item)
        fresh += 1
    return fresh, repeated


def next_page(meta: object, current: int) -> int | None:
    """The page after `current` according to meta.next.href, else meta.last_page; None at the end."""
    if not isinstance(meta, dict):
        return None
    nxt = meta.get("next")
    href = nxt.get("href") if isinstance(nxt, dict) else None
    if isinstance(href, str) and href:
        pages = parse_qs(urlsplit(href).query).get("page")
        number = header_int(pages[0]) if pages else None
        return number if number is not None else current + 1
    last, shown = meta.get("last_page"), meta.get("current_page")
    shown = shown if isinstance(shown, int) else current
    if isinstance(last, int) and last > shown:
        return shown + 1
    return None
