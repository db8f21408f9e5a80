"""HTML ingest: main text without boilerplate, <img> with figcaption/alt as captioned pictures, local files
only inside the folder, data URIs, URLs only when ImageOptions allows them."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from mm_rerank_components.ingest import scan_folder
from mm_rerank_components.ingest.documents import DocumentOptions, read_document
from mm_rerank_components.media import ImageOptions


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


PAGE = """<!doctype html><html><head><title>Fox guide</title><style>p {{color: red}}</style>
<script>var boiler = "plate";</script></head>
<body><header><a href="/">Home</a> | <a href="/about">About</a></header>
<nav><ul><li>Menu item</li></ul></nav>
<div class="sidebar">Related links</div>
<main>
<h1>Red foxes</h1><p>Foxes live in dens &amp; hunt at dusk.</p>
<figure><img src="pics/fox.png" alt="fox alt"><figcaption>Figure 1: A red fox
 in the snow.</figcaption></figure>
<p>More about <b>foxes</b> and their cubs.</p>
<h2>Owls</h2><p>Owls hunt at night.</p>
<img src="owl%20photo.png" alt="An owl on a branch">
<img src="data:image/png;base64,{data_uri}" alt="inline blue">
<img src="https://example.invalid/remote.png" alt="remote">
<img src="../outside.png" alt="escapes">
<img src="missing.png" alt="gone">
<img src="icon.png" alt="tiny icon">
</main>
<footer>Copyright 2026 Foxes Inc</footer>
</body></html>"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "pics").mkdir(parents=True)
    (root / "pics" / "fox.png").write_bytes(_png((220, 20, 20)))
    (root / "owl photo.png").write_bytes(_png((90, 60, 30)))
    (root / "icon.png").write_bytes(_png((0, 0, 0), (8, 8)))
    (root / "lonely.png").write_bytes(_png((20, 200, 20)))
    (tmp_path / "outside.png").write_bytes(_png((1, 2, 3)))
    data_uri = base64.b64encode(_png((20, 20, 220))).decode()
    (root / "guide.html").write_text(PAGE.format(data_uri=data_uri))
    return root


def test_html_main_text_without_boilerplate_in_sections(site: Path, tmp_path: Path) -> None:
    scan = scan_folder(site, documents=DocumentOptions(figures_dir=tmp_path / "figures"))
    texts = [t.text for t in scan.texts]
    assert texts == [
        "Red foxes\n\nFoxes live in dens & hunt at dusk.\n\nFigure 1: A red fox in the snow.\n\nMore about foxes and their cubs.",
        "Owls\n\nOwls hunt at night.",
    ]
    joined = " ".join(texts)
    for boiler in ("Home", "Menu item", "Related links", "Copyright", "boiler", "color"):
        assert boiler not in joined
    assert (
        scan.texts[0].metadata["document"] == "guide.html" and scan.texts[0].metadata["title"] == "guide.html"
    )


def test_html_pictures_with_captions_local_data_and_refusals(site: Path, tmp_path: Path) -> None:
    scan = scan_folder(site, documents=DocumentOptions(figures_dir=tmp_path / "figures"))
    figures = {Path(i.path).name: i for i in scan.images if "document" in i.metadata}
    fox = figures["fox.png"]
    assert fox.caption == "Figure 1: A red fox in the snow." and fox.metadata["figure_label"] == "Figure 1"
    assert fox.path == str(site / "pics" / "fox.png")  # a file of the folder is used where it is
    assert fox.metadata["citation"] == "guide.html, figure 1"
    assert figures["owl photo.png"].caption == "An owl on a branch"
    inline = [i for i in scan.images if i.caption == "inline blue"]
    assert len(inline) == 1 and Path(inline[0].path).parent == tmp_path / "figures"
    # the page's pictures are not ingested twice; pictures no page shows as a figure still are
    standalone = [i for i in scan.images if "document" not in i.metadata]
    assert [Path(i.path).name for i in standalone] == ["icon.png", "lonely.png"]  # the icon: a folder picture
    skipped = {s.reason for s in scan.skipped}
    assert "ingested as a figure of guide.html, with its caption" in skipped
    assert any("a URL, not fetched (ImageOptions(allow_urls=True)" in s for s in skipped)
    assert any("under 32 px (an icon)" in s for s in skipped)
    failed = " | ".join(f.reason for f in scan.failed)
    assert "'../outside.png'" in failed and "points outside the folder" in failed
    assert "'missing.png'" in failed and "no such file" in failed
    assert len(scan.failed) == 2


@pytest.fixture
def picture_server() -> Iterator[str]:
    body = _png((200, 200, 0))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/p.png"
    server.shutdown()
    server.server_close()


def test_html_fetches_urls_only_when_allowed_and_within_limits(picture_server: str, tmp_path: Path) -> None:
    page = (
        f'<p>Remote</p><figure><img src="{picture_server}"><figcaption>Yellow</figcaption></figure>'.encode()
    )
    off = read_document(tmp_path / "p.html", page, DocumentOptions(figures_dir=tmp_path / "f"))
    assert off.figures == [] and "not fetched" in off.skipped[0][1]
    allowed = DocumentOptions(figures_dir=tmp_path / "f", image_options=ImageOptions(allow_urls=True))
    on = read_document(tmp_path / "p.html", page, allowed)
    assert [f.caption for f in on.figures] == ["Yellow"] and Path(on.figures[0].path).exists()
    small = DocumentOptions(
        figures_dir=tmp_path / "f", image_options=ImageOptions(allow_urls=True, max_bytes=10)
    )
    capped = read_document(tmp_path / "p.html", page, small)
    assert capped.figures == [] and "over the limit of 10" in capped.failed[0][1]


def test_html_broken_markup_and_legacy_charset_are_read(tmp_path: Path) -> None:
    page = '<html><meta charset="latin-1"><div><p>Caf\xe9 <b>au lait<div>Unclosed</html>'.encode("latin-1")
    out = read_document(tmp_path / "b.html", page, DocumentOptions(figures_dir=tmp_path / "f"))
    assert [p.text for p in out.passages] == ["Café au lait\n\nUnclosed"]


def test_html_text_cap_keeps_what_fits(tmp_path: Path) -> None:
    page = ("<h1>A</h1><p>" + "x" * 80 + "</p><h1>B</h1><p>" + "y" * 80 + "</p>").encode()
    out = read_document(tmp_path / "c.html", page, DocumentOptions(figures_dir=tmp_path / "f", max_chars=100))
    assert len(out.passages) == 1 and "max_chars=100" in out.failed[0][1]


def test_html_figures_know_their_section_and_place(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png((1, 2, 3)))
    page = (
        b"<h1>One</h1><p>intro</p><img src='a.png' alt='end of one'>"
        b"<h2>Two</h2><p>before <img src='a.png' alt='inside two'> after</p>"
        b"<h2><img src='a.png' alt='in heading'>Three</h2><p>text</p>"
    )
    out = read_document(tmp_path / "p.html", page, DocumentOptions(figures_dir=tmp_path / "figs"))
    places = {}
    for figure in out.figures:
        assert figure.passage is not None and figure.offset is not None
        text = out.passages[figure.passage].text
        places[figure.caption] = (text[: figure.offset], text[figure.offset :])
    # a picture between blocks before a heading ends the section before it
    assert places["end of one"] == ("One\n\nintro", "")
    assert places["inside two"] == ("Two\n\nbefore", " after")
    assert places["in heading"] == ("", "Three\n\ntext")
