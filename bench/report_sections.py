"""Parts of a generated markdown page that another script writes, kept between markers.

docs/benchmarks.md is written by ``bench_compare.py``; its hand-written
analysis and the iCEBreaker table of ``bench_up5k.py`` live there between
HTML-comment markers: the page's writer keeps them when it rewrites the page,
and the part's own writer replaces only what is between its markers.
"""

__all__ = ["UP5K_TABLE", "marked", "with_marked"]

#: The markers of bench_up5k.py's section of docs/benchmarks.md.
UP5K_TABLE = ("<!-- up5k table: written by bench/bench_up5k.py; bench_compare.py keeps it "
              "when it rewrites this file -->", "<!-- end of up5k table -->")


def marked(text, markers):
    """What ``text`` holds between ``markers`` (begin, end), or None."""
    begin, end = markers
    if begin not in text or end not in text.split(begin, 1)[1]:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def with_marked(text, markers, body, *, before=None):
    """``text`` with ``body`` between ``markers``: in their place if ``text`` has them,
    otherwise inserted before the line ``before`` (appended if absent)."""
    begin, end = markers
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    if marked(text, markers) is not None:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    lines = text.split("\n")
    if before is not None and before in lines:
        at = lines.index(before)
        return "\n".join(lines[:at] + [block, ""] + lines[at:])
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
