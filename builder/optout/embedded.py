"""Opt-out and provenance statements embedded in the image file itself (XMP).

The XMP packet is located by walking the container's structure (JPEG APP1 segments incl.
Extended XMP, PNG iTXt and the tEXt / zTXt converters write, WebP `XMP ` chunk, TIFF tag
700; a plain packet search for other formats): the pixels are never decoded. Packets are parsed with defusedxml, which refuses
DTDs and entities (XXE, billion laughs); a packet it refuses or cannot parse is still
searched as text for the values below, so a hostile or broken packet cannot hide them.

Read, by local name and in every form XMP allows (attribute, element text, `rdf:resource`,
any namespace prefix):
- PLUS `DataMining` with a `DMI-PROHIBITED*` value -> a data-mining reservation;
- IPTC `DigitalSourceType` naming trained-algorithmic (AI-generated) media;
- `xmpRights:WebStatement` and `cc:license` -> extra licence evidence.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_JPEG_EXT = b"http://ns.adobe.com/xmp/extension/\x00"
MAX_PACKET = 4 * 1024 * 1024  # an XMP packet larger than this is not metadata
RIGHTS_NS = "http://ns.adobe.com/xap/1.0/rights/"
CC_NS_PART = "creativecommons.org/ns"
AI_SOURCE_TYPES = frozenset({
    "trainedalgorithmicmedia", "compositewithtrainedalgorithmicmedia", "compositesynthetic",
})
_DMI_RE = re.compile(r"DMI-PROHIBITED[A-Z-]*", re.IGNORECASE)
_AI_RE = re.compile(r"(?:compositeWith)?trainedAlgorithmicMedia|compositeSynthetic",
                    re.IGNORECASE)
_PACKET_RE = re.compile(rb"<(?:[A-Za-z0-9_]+:)?xmpmeta\b.*?</(?:[A-Za-z0-9_]+:)?xmpmeta>",
                        re.DOTALL)


@dataclass
class EmbeddedFacts:
    """What the embedded metadata says; `where` names the container part it came from."""

    where: list[str] = field(default_factory=list)
    data_mining: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)
    licenses: list[tuple[str, str]] = field(default_factory=list)  # (evidence field, value)
    problems: list[str] = field(default_factory=list)

    @property
    def prohibited(self) -> str | None:
        return next((v for v in self.data_mining if "dmi-prohibited" in v.lower()), None)

    @property
    def ai_generated(self) -> str | None:
        return next((v for v in self.source_types if _last(v) in AI_SOURCE_TYPES), None)


def scan(data: bytes) -> EmbeddedFacts:
    facts = EmbeddedFacts()
    for where, packet in xmp_packets(data):
        facts.where.append(where)
        read_packet(packet, where, facts)
    return facts


# --- finding the packet -------------------------------------------------------------------


def xmp_packets(data: bytes) -> list[tuple[str, bytes]]:
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    match = _PACKET_RE.search(data, 0, MAX_PACKET * 4)
    return [("xmp packet", match.group(0))] if match else []


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, body start, body end) of every JPEG segment before the image data."""
    segments = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no metadata after this
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        segments.append((marker, pos + 4, pos + 2 + length))
        pos += 2 + length
    return segments


def chunk_kinds(data: bytes) -> set[bytes]:
    """The chunk types of a PNG or WebP file, read from the chunk headers only."""
    kinds: set[bytes] = set()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            kinds.add(kind)
            pos += 12 + length
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        pos = 12
        while pos + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[pos:pos + 8])
            kinds.add(kind)
            pos += 8 + length + (length & 1)
    return kinds


def _jpeg(data: bytes) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    extended: dict[bytes, dict[int, bytes]] = {}
    for marker, start, end in jpeg_segments(data):
        if marker != 0xE1:
            continue
        body = data[start:end]
        if body.startswith(XMP_JPEG):
            found.append(("JPEG APP1 XMP", body[len(XMP_JPEG):]))
        elif body.startswith(XMP_JPEG_EXT) and len(body) > 75:
            head = body[len(XMP_JPEG_EXT):]
            guid, (offset,) = head[:32], struct.unpack(">I", head[36:40])
            extended.setdefault(guid, {})[offset] = head[40:]
    for parts in extended.values():
        packet = b"".join(parts[k] for k in sorted(parts))
        if len(packet) <= MAX_PACKET:
            found.append(("JPEG APP1 Extended XMP", packet))
    return found


# PNG text chunks that carry XMP: the standard iTXt, and what converters write in tEXt or
# zTXt (ImageMagick's `Raw profile type xmp` is a JPEG's XMP converted to PNG, in hex).
_PNG_XMP_KEYWORDS = (b"XML:com.adobe.xmp\x00", b"Raw profile type xmp\x00")


def _png(data: bytes) -> list[tuple[str, bytes]]:
    found = []
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        # Only metadata chunks are sliced: copying every IDAT would cost as much as the file.
        keyword = next((k for k in _PNG_XMP_KEYWORDS if data.startswith(k, pos + 8)), None)
        if kind in (b"iTXt", b"tEXt", b"zTXt") and keyword is not None:
            body = data[pos + 8:pos + 8 + length]
            packet = _itxt_text(body) if kind == b"iTXt" else _text_chunk(body, kind, keyword)
            if packet is not None:
                name = keyword[:-1].decode()
                found.append((f"PNG {kind.decode()} {name}", packet))
        if kind == b"IEND":
            break
        pos += 12 + length
    return found


def _text_chunk(body: bytes, kind: bytes, keyword: bytes) -> bytes | None:
    """The XMP of a tEXt or zTXt chunk (`keyword` NUL text, or NUL method zlib-text)."""
    text = body[len(keyword):]
    if kind == b"zTXt":
        try:
            text = zlib.decompressobj().decompress(text[1:], MAX_PACKET)  # capped: a zip bomb
        except zlib.error:
            return None
    if keyword.startswith(b"Raw profile"):
        return _raw_profile(text)
    return text


def _raw_profile(text: bytes) -> bytes | None:
    """ImageMagick's raw profile: `\nxmp\n  LENGTH\nHEX...` -> the profile's bytes."""
    lines = text.strip().split(b"\n", 2)
    if len(lines) < 3:
        return None
    try:
        return bytes.fromhex(re.sub(rb"\s+", b"", lines[2]).decode("ascii"))
    except ValueError:
        return None


def _itxt_text(body: bytes) -> bytes | None:
    rest = body[len(b"XML:com.adobe.xmp\x00"):]
    if len(rest) < 2:
        return None
    compressed = rest[0] == 1
    rest = rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if not compressed:
        return text
    try:
        inflater = zlib.decompressobj()
        return inflater.decompress(text, MAX_PACKET)  # capped: a zip bomb stops here
    except zlib.error:
        return None


def _webp(data: bytes) -> list[tuple[str, bytes]]:
    found = []
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        if kind == b"XMP ":
            found.append(("WebP XMP chunk", data[pos + 8:pos + 8 + min(length, MAX_PACKET)]))
        pos += 8 + length + (length & 1)
    return found


def _tiff(data: bytes) -> list[tuple[str, bytes]]:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        for i in range(min(count, 4096)):
            entry = data[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
            tag, _type, n, offset = struct.unpack(order + "HHII", entry)
            if tag == 700 and n <= MAX_PACKET:
                start = offset if n > 4 else ifd + 10 + 12 * i
                return [("TIFF tag 700 XMP", data[start:start + n])]
    except struct.error:
        pass
    return []


# --- reading the packet -------------------------------------------------------------------


def read_packet(packet: bytes, where: str, facts: EmbeddedFacts) -> None:
    try:
        root = fromstring(packet.strip(b"\x00 \r\n\t"), forbid_dtd=True)
    # LookupError: an `encoding` the parser does not know (x-mac-roman, EBCDIC); escaping,
    # it left every such image optout_unchecked on every run.
    except (DefusedXmlException, ParseError, ValueError, LookupError) as exc:
        facts.problems.append(f"{where}: unparseable XMP ({type(exc).__name__}); searched as text")
        _raw_scan(packet, facts)
        return
    for element in root.iter():
        _read_attributes(element, facts)
        name, ns = _split(element.tag)
        if name == "DataMining":
            facts.data_mining.extend(_values(element))
        elif name == "DigitalSourceType":
            facts.source_types.extend(_values(element))
        elif name == "WebStatement" and ns == RIGHTS_NS:
            facts.licenses.extend(("xmp:xmpRights:WebStatement", v) for v in _values(element))
        elif name == "license" and CC_NS_PART in ns:
            facts.licenses.extend(("xmp:cc:license", v) for v in _values(element))


def _read_attributes(element: Element, facts: EmbeddedFacts) -> None:
    for key, value in element.attrib.items():
        name, ns = _split(key)
        if name == "DataMining":
            facts.data_mining.append(value.strip())
        elif name == "DigitalSourceType":
            facts.source_types.append(value.strip())
        elif name == "WebStatement" and ns == RIGHTS_NS:
            facts.licenses.append(("xmp:xmpRights:WebStatement", value.strip()))
        elif name == "license" and CC_NS_PART in ns:
            facts.licenses.append(("xmp:cc:license", value.strip()))


def _values(element: Element) -> list[str]:
    """Element text, and `rdf:resource` values, of the element and its descendants."""
    out = []
    for node in element.iter():
        if node.text and node.text.strip():
            out.append(node.text.strip())
        for key, value in node.attrib.items():
            if _split(key)[0] == "resource" and value.strip():
                out.append(value.strip())
    return out


def _raw_scan(packet: bytes, facts: EmbeddedFacts) -> None:
    # NULs dropped: a UTF-16 or UTF-32 packet (XMP allows both) is then its ASCII text, and
    # `DMI-PROHIBITED` is found in it (searched as UTF-8, `D\0M\0I` hid it).
    text = packet[:MAX_PACKET].replace(b"\x00", b"").decode("utf-8", errors="replace")
    facts.data_mining.extend(m.group(0) for m in _DMI_RE.finditer(text))
    facts.source_types.extend(m.group(0) for m in _AI_RE.finditer(text))


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return name, ns
    return tag.split(":")[-1], ""


def _last(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
