"""Property tests behind the fault tests: header sanitiser, upstream URL builder, SSE decoder splits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from streamwatch.config import Route
from streamwatch.proxy.headers import HOP_BY_HOP, client_response_headers, upstream_request_headers
from tests.reliability.fuzz_sse import split_equivalence

# First byte: the read size seed of split_equivalence; the rest: the stream.
FUZZ_CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "fuzz"
REGRESSIONS = sorted(FUZZ_CORPUS.glob("*.bin"))
NAMES = st.sampled_from(
    ["Connection", "connection", "Keep-Alive", "TE", "X-Hop", "x-hop", "X-End", "Authorization",
     "Content-Length", "Host", "Upgrade", "Trailer", "Proxy-Authorization", "X-Multi"]
)  # fmt: skip
HEADERS = st.lists(
    st.tuples(
        NAMES,
        st.one_of(
            st.sampled_from(["x-hop", "X-End, x-multi", "close", ""]), st.text("abc ,", max_size=8)
        ),
    ),
    max_size=12,
)


def _proxy(items: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


class TestHeaderSanitiser:
    """Hop-by-hop stripping: nothing Connection names survives; end-to-end headers keep order."""

    @given(HEADERS)
    def test_properties(self, items: list[tuple[str, str]]) -> None:
        """Output has no hop-by-hop or Connection-named header, keeps the rest in order, is idempotent."""
        named = {
            t.strip().lower() for k, v in items if k.lower() == "connection" for t in v.split(",")
        }
        for build in (upstream_request_headers, client_response_headers):
            out = build(_proxy(items))
            names = {k.lower() for k in out}
            assert not names & (HOP_BY_HOP | named)
            kept = [(k, v) for k, v in items if k.lower() in names]
            assert list(out.items()) == kept
            assert list(build(CIMultiDictProxy(out)).items()) == list(out.items())


TARGETS = st.one_of(
    st.text(max_size=40).map(lambda t: "/" + t),
    st.sampled_from(["//evil.test/x", "/\\evil.test/", "/http://evil.test/", "/%2F%2Fevil.test",
                     "/@evil.test", "/#frag", "/a?b=http://evil.test", "/..%2F..%2Fevil", "/\u2603"]),
)  # fmt: skip


class TestUpstreamUrl:
    """Route.target: whatever the request target, the origin is the configured one."""

    @given(
        TARGETS,
        st.sampled_from(["http://127.0.0.1:4000", "https://gw.test/base/", "http://gw.test/v"]),
    )
    def test_origin_pinned(self, target: str, upstream: str) -> None:
        """The built URL's scheme, host and port are the route's."""
        route = Route("r", URL(upstream))
        built = route.target(target)
        assert built.origin() == route.upstream.origin()
        assert built.raw_path.startswith(route.upstream.raw_path.rstrip("/"))


class TestSseSplits:
    """The decoder's events do not depend on how the bytes were split into reads."""

    @given(st.binary(max_size=512))
    def test_random_bytes(self, data: bytes) -> None:
        """Random bytes, random split: no exception, same events."""
        split_equivalence(data)

    @given(
        st.lists(
            st.sampled_from([b"data: x", b"data:", b"event: e", b"id: 1", b"id: a\x00", b"retry: 5", b":c",
                             b"\r\n", b"\n", b"\r", b"\xef\xbb\xbf", b"\xff", b"data: \xf0\x9f\x98"]),
            max_size=40,
        ).map(b"".join),
        st.integers(0, 255),
    )  # fmt: skip
    def test_sse_grammar(self, raw: bytes, seed: int) -> None:
        """SSE-shaped input (fields, CR/LF/CRLF, BOM, NUL ids, split UTF-8): same events per split."""
        split_equivalence(bytes([seed]) + raw)

    def test_regression_corpus_is_there(self) -> None:
        """The regression corpus is in the repository, so the replay below cannot pass empty."""
        assert REGRESSIONS, f"no regression inputs in {FUZZ_CORPUS}"

    @pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
    def test_regression(self, path: Path) -> None:
        """A known-hard split (or an input the long fuzz run found) decodes the same in any reads."""
        split_equivalence(path.read_bytes())

    @pytest.mark.fuzz_long
    @given(st.binary(max_size=4096))
    def test_long(self, data: bytes) -> None:
        """The atheris target's property for machines without atheris; examples from the profile."""
        split_equivalence(data)
