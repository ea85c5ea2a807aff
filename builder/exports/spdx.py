"""`spdx.json`: an SPDX 2.3 document, written with spdx-tools, that lists the dataset as a
Package and every sample as a File with its checksums, licence and credit.

spdx-tools 0.8.5 validates relationships in quadratic time (every relationship rebuilds the
list of all SPDX ids: spdx/tools-python#818), which takes minutes at 10,000 files and hours
at 100,000. `validate_document` runs spdx-tools' own validators on everything else and checks
relationships with one set of ids, producing the same messages.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from builder import clock
from builder.exports.papers import replacing
from builder.identity import tool_version
from builder.ledger import Ledger
from builder.shards import shard_name

if TYPE_CHECKING:
    from spdx_tools.spdx.model import Document, Relationship
    from spdx_tools.spdx.validation.validation_message import ValidationMessage

    from builder.exports.papers import Facts

DOCUMENT_ID = "SPDXRef-DOCUMENT"
PACKAGE_ID = "SPDXRef-Dataset"
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]")


class SpdxInvalid(RuntimeError):
    """The document we built does not validate: a bug here or an odd licence id in the data."""


def file_spdx_id(key: str) -> str:
    # Keys are [0-9a-z_-] and SPDX ids [A-Za-z0-9.-]; keys never hold ".", so "_" -> "." is
    # one-to-one and a reader can map an id back to its key.
    return "SPDXRef-File-" + key.replace("_", ".")


def license_ref(license_id: str) -> str:
    """A catalogue id that the SPDX licence list does not know, as a valid LicenseRef-."""
    bare = license_id.removeprefix("LicenseRef-")
    return "LicenseRef-" + _NOT_ID_CHARS.sub("-", bare)


def write_spdx(ledger: Ledger, path: Path, facts: Facts) -> int:
    """Build, validate and write the document; return the number of files in it.

    Written as a stream, one sample at a time: the document's head (creation info, the
    Package, extracted licensing info, DESCRIBES) is built and validated whole with
    spdx-tools; then each File is built, validated against that head and converted by
    spdx-tools, and written as one JSON line; then a CONTAINS relationship per File. The
    same document as build_document's (tests/test_papers.py), in memory that does not grow
    with the dataset, in half the time (no pure-Python indenting of every file)."""
    licensing = _Licensing()
    head = _head(ledger, facts, licensing)
    messages = validate_document(head)
    with replacing(path) as tmp:  # the last good document stays until this one validates
        with tmp.open("w", encoding="utf-8") as out:
            count = _write_streamed(out, ledger, head, licensing, messages)
        if messages:
            listed = "\n".join(f"  {m.validation_message} "
                               f"({m.context.spdx_id or m.context.parent_id})"
                               for m in messages[:20])
            raise SpdxInvalid(f"{path}: the SPDX document does not validate "
                              f"({len(messages)} message(s) or more):\n{listed}")
    return count


def _write_streamed(out: IO[str], ledger: Ledger, head: Document, licensing: _Licensing,
                    messages: list[ValidationMessage]) -> int:
    """The head's fields as spdx-tools' writer lays them out, then a File per sample and a
    relationship per File, one JSON object per line; spdx-tools' messages about the files
    are added to `messages`. Returns the number of files."""
    from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
    from spdx_tools.spdx.jsonschema.relationship_converter import RelationshipConverter
    from spdx_tools.spdx.model import Relationship, RelationshipType

    converter = DocumentConverter()
    files = _file_converter()
    fields = converter.convert(head)
    fields.pop("files", None)
    relationships = [_line(r) for r in fields.pop("relationships", [])]
    out.write("{\n")
    out.write("".join(f"    {json.dumps(name)}: {_indented(value)},\n"
                      for name, value in fields.items()))
    count = 0
    lines = _FileLines(head, licensing, files, messages)
    for row in ledger.iter_samples():
        out.write(('    "files": [\n' if count == 0 else ",\n") + lines(row))
        count += 1
    if count:  # as spdx-tools' writer: no "files" at all in a document without any
        out.write("\n    ],\n")
    out.write('    "relationships": [\n' + ",\n".join(relationships))
    contains = RelationshipConverter()
    form: dict[str, Any] | None = None  # the first CONTAINS as spdx-tools converts it
    for key in _keys(ledger):
        file_id = file_spdx_id(key)
        if form is None:
            relationship = Relationship(PACKAGE_ID, RelationshipType.CONTAINS, file_id)
            converted = contains.convert(relationship)
            if converted.get(_RELATED) == file_id:
                form = converted
            out.write(",\n" + _line(converted))
        else:  # the others differ from it in the file they name alone
            out.write(",\n" + _line({**form, _RELATED: file_id}))
    out.write("\n    ]\n}\n")
    return count


_RELATED = "relatedSpdxElement"


def _file_converter() -> Any:
    """spdx-tools' FileConverter, each JSON property name worked out once: it derives the
    camelCase name of each of a File's 15 properties with a regex for every file written,
    a quarter of the time converting it took."""
    from spdx_tools.spdx.jsonschema.file_converter import FileConverter

    class _Converter(FileConverter):  # type: ignore[misc]
        names: dict[Any, str] = {}

        def json_property_name(self, file_property: Any) -> str:
            name = self.names.get(file_property)
            if name is None:
                name = self.names[file_property] = super().json_property_name(file_property)
            return name

    return _Converter()


class _FileLines:
    """Each sample's File as the JSON line spdx-tools writes for it.

    spdx-tools builds, validates and converts the first File of each shape (its licence, and
    whether it has a credit, a comment, a contributor). A later sample of that shape gets that
    converted form with its own values put in, once they pass the checks spdx-tools makes of
    them (SPDX id, file name, checksums, all text); its licence passed them with the first.
    Building and converting a File in spdx-tools took ~0.25 ms, two thirds of the papers'
    time at the end of a build. A sample whose values fail a check goes the whole way, so a
    message about it is spdx-tools' own; a form that does not come back from its own values
    unchanged (another spdx-tools' layout) is not used.
    """

    def __init__(self, head: Document, licensing: _Licensing, converter: Any,
                 messages: list[ValidationMessage]) -> None:
        from spdx_tools.spdx.validation.spdx_id_validators import is_valid_internal_spdx_id

        self.head = head
        self.licensing = licensing
        self.converter = converter
        self.messages = messages
        self.check = _FileCheck(head)
        self.valid_id = is_valid_internal_spdx_id
        self.forms: dict[tuple[str, bool, bool, bool, bool], dict[str, Any] | None] = {}

    def __call__(self, row: Any) -> str:
        values = _FileValues.of(row)
        shape = (row["license"], values.credit is not None, values.comment is not None,
                 values.creator is not None, values.source_credit is not None)
        form = self.forms.get(shape)
        if form is not None and self._plain(values):
            return _line(values.put_into(form))
        file = values.file(row["license"], self.licensing)
        problems = self.check(file, row["license"])
        if len(self.messages) < 20:  # enough to say what is wrong
            self.messages.extend(problems)
        converted = self.converter.convert(file, self.head)
        if shape not in self.forms and not problems and self._plain(values):
            self.forms[shape] = converted if _round_trips(values, converted) else None
        return _line(converted)

    def _plain(self, values: _FileValues) -> bool:
        """What spdx-tools checks of a File's own values (besides its licence): a valid
        SPDX id, a relative name, lowercase hex checksums of their lengths; text as text."""
        return (all(isinstance(text, str) for text in (values.name, values.sha1, values.sha256))
                and all(isinstance(text, str | None) for text in (
                    values.credit, values.comment, values.creator, values.source_credit))
                and self.valid_id(values.spdx_id) and not values.name.startswith("/")
                and _SHA1.fullmatch(values.sha1) is not None
                and _SHA256.fullmatch(values.sha256) is not None)


def _round_trips(values: _FileValues, converted: dict[str, Any]) -> bool:
    try:
        return values.put_into(converted) == converted
    except (KeyError, TypeError, ValueError):  # a layout put_into does not know
        return False


_SHA1 = re.compile("[0-9a-f]{40}")
_SHA256 = re.compile("[0-9a-f]{64}")


class _FileCheck:
    """spdx-tools' validate_file_within_document, its licence checks done once per licence.

    Those depend on the licence expression and the document's extracted licensing info
    alone, and took half the time of writing the document; a licence that fails them is
    checked in full for every file that names it, so the messages are spdx-tools' own."""

    def __init__(self, head: Document) -> None:
        from spdx_tools.spdx.validation import file_validator, license_expression_validator
        from spdx_tools.spdx.validation import validation_message as vm
        from spdx_tools.spdx.validation.spdx_id_validators import validate_spdx_id

        self.head = head
        self.version = head.creation_info.spdx_version
        self.licence_ok: dict[str, bool] = {}
        self.files = file_validator
        self.licences = license_expression_validator
        self.messages = vm
        self.validate_spdx_id = validate_spdx_id

    def __call__(self, file: Any, license_id: str) -> list[ValidationMessage]:
        if license_id not in self.licence_ok:
            self.licence_ok[license_id] = not (
                self.licences.validate_license_expression(file.license_concluded, self.head,
                                                          file.spdx_id)
                or self.licences.validate_license_expressions(file.license_info_in_file,
                                                              self.head, file.spdx_id))
        if not self.licence_ok[license_id]:
            return list(self.files.validate_file_within_document(file, self.version, self.head))
        context = self.messages.ValidationContext(
            spdx_id=file.spdx_id, parent_id=DOCUMENT_ID,
            element_type=self.messages.SpdxElementType.FILE, full_element=file)
        messages = [self.messages.ValidationMessage(text, context)
                    for text in self.validate_spdx_id(file.spdx_id, self.head)]
        return messages + list(self.files.validate_file(file, self.version, context))


def _indented(value: Any) -> str:
    # A top-level field laid out as spdx-tools' writer does (4 spaces), one level in.
    return json.dumps(value, indent=4, ensure_ascii=False).replace("\n", "\n    ")


def _line(value: Any) -> str:
    return "        " + json.dumps(value, ensure_ascii=False)


def _keys(ledger: Ledger) -> Iterable[str]:
    return (key for (key,) in ledger.db.execute("SELECT key FROM samples ORDER BY key"))


def _head(ledger: Ledger, facts: Facts, licensing: _Licensing) -> Document:
    """The document without its files and their CONTAINS relationships: what build_document
    makes, from SQL passes over the samples that keep nothing per sample in memory."""
    from spdx_tools.spdx.model import Document, Relationship, RelationshipType

    for license_id in facts.licenses:  # every LicenseRef- a file can name, before the files
        licensing.expression(license_id)
    verification = hashlib.sha1()
    for (sha1,) in ledger.db.execute("SELECT sha1 FROM samples ORDER BY sha1"):
        verification.update(sha1.encode())
    package = _package(facts, verification.hexdigest(), licensing)
    return Document(
        creation_info=_creation_info(facts, _namespace(facts, _keys(ledger))), packages=[package],
        files=[], relationships=[Relationship(DOCUMENT_ID, RelationshipType.DESCRIBES,
                                              PACKAGE_ID)],
        extracted_licensing_info=licensing.extracted())


def build_document(ledger: Ledger, facts: Facts) -> Document:
    """The whole document in memory (what write_spdx streams): for tests and benchmarks."""
    from spdx_tools.spdx.model import Document, Relationship, RelationshipType

    licensing = _Licensing()
    rows = list(ledger.iter_samples())
    files = [_file(row, licensing) for row in rows]
    sha1s = sorted(next(c.value for c in f.checksums if c.algorithm.name == "SHA1")
                   for f in files)
    package = _package(facts, hashlib.sha1("".join(sha1s).encode()).hexdigest(), licensing)
    relationships: list[Relationship] = [
        Relationship(DOCUMENT_ID, RelationshipType.DESCRIBES, PACKAGE_ID)]
    relationships.extend(Relationship(PACKAGE_ID, RelationshipType.CONTAINS, f.spdx_id)
                         for f in files)
    keys = (row["key"] for row in rows)
    return Document(creation_info=_creation_info(facts, _namespace(facts, keys)),
                    packages=[package], files=files, relationships=relationships,
                    extracted_licensing_info=licensing.extracted())


def _creation_info(facts: Facts, namespace: str) -> Any:
    from spdx_tools.spdx.model import CreationInfo

    created = datetime.strptime(clock.now_iso(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return CreationInfo(
        spdx_version="SPDX-2.3", spdx_id=DOCUMENT_ID, data_license="CC0-1.0",
        name=f"{facts.name}-{facts.version}", document_namespace=namespace,
        creators=[_tool_actor()], created=created.replace(tzinfo=None),
        creator_comment="Generated by cleanset from the build ledger; one File per sample.",
    )


def validate_document(document: Document) -> list[ValidationMessage]:
    """spdx-tools' validate_full_spdx_document, with the relationships checked in linear time.

    spdx-tools validates the document without its CONTAINS-style relationships (DESCRIBES
    kept, since their absence is itself a message); those are then checked against a set of
    ids, with spdx-tools' wording. A package with files_analyzed=False makes spdx-tools
    inspect CONTAINS itself (also quadratically), so such documents get its plain validation.
    """
    from spdx_tools.spdx.model import Document as SpdxDocument
    from spdx_tools.spdx.model import RelationshipType
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    if any(not p.files_analyzed for p in document.packages):
        return list(validate_full_spdx_document(document))
    describing = (RelationshipType.DESCRIBES, RelationshipType.DESCRIBED_BY)
    describes = [r for r in document.relationships if r.relationship_type in describing]
    others = [r for r in document.relationships if r.relationship_type not in describing]
    rest = SpdxDocument(
        creation_info=document.creation_info, packages=document.packages,
        files=document.files, snippets=document.snippets, annotations=document.annotations,
        relationships=describes, extracted_licensing_info=document.extracted_licensing_info)
    messages = list(validate_full_spdx_document(rest))
    if messages and "validation process has been cancelled" in messages[-1].validation_message:
        return messages
    messages.extend(_validate_relationships(others, document.creation_info.spdx_version,
                                            document))
    return messages


def _validate_relationships(relationships: list[Relationship], spdx_version: str,
                            document: Document) -> list[ValidationMessage]:
    """spdx-tools' validate_relationships with the id look-up against a set, once."""
    from spdx_tools.spdx.model import RelationshipType, SpdxNoAssertion, SpdxNone
    from spdx_tools.spdx.validation.spdx_id_validators import (
        get_list_of_all_spdx_ids,
        validate_spdx_id,
    )
    from spdx_tools.spdx.validation.validation_message import (
        SpdxElementType,
        ValidationContext,
        ValidationMessage,
    )

    known = set(get_list_of_all_spdx_ids(document))

    def check(spdx_id: str) -> list[str]:
        found = validate_spdx_id(spdx_id, document, check_document=False)
        # validate_spdx_id returns early for external refs and malformed ids; only a plain
        # internal id is then looked up in the document (same order as spdx-tools).
        if len(spdx_id.split(":")) == 1 and spdx_id not in known:
            found.append(f'did not find the referenced spdx_id "{spdx_id}" in the SPDX document')
        return found

    messages: list[ValidationMessage] = []
    for rel in relationships:
        context = ValidationContext(element_type=SpdxElementType.RELATIONSHIP, full_element=rel)
        texts = check(rel.spdx_element_id)
        if rel.related_spdx_element_id not in [SpdxNone(), SpdxNoAssertion()]:
            texts += check(rel.related_spdx_element_id)
        if spdx_version == "SPDX-2.2" and rel.relationship_type in (
                RelationshipType.SPECIFICATION_FOR, RelationshipType.REQUIREMENT_DESCRIPTION_FOR):
            texts.append(f"{rel.relationship_type} is not supported in SPDX-2.2")
        messages.extend(ValidationMessage(t, context) for t in texts)
    return messages


class _Licensing:
    """Turns sample licence ids into spdx-tools expressions, remembering every LicenseRef-."""

    def __init__(self) -> None:
        from license_expression import get_spdx_licensing

        self.spdx = get_spdx_licensing()
        self.refs: dict[str, str] = {}  # LicenseRef-... -> catalogue id
        self.cache: dict[str, Any] = {}
        self.symbol_cache: dict[str, list[Any]] = {}

    def expression(self, license_id: str) -> Any:
        if license_id not in self.cache:
            self.cache[license_id] = self.spdx.parse(self._rewrite(license_id))
        return self.cache[license_id]

    def symbols(self, license_id: str) -> list[Any]:
        # A dataset has a handful of distinct licences over millions of files: parse each once.
        if license_id not in self.symbol_cache:
            self.symbol_cache[license_id] = [self.spdx.parse(str(s))
                                              for s in self.expression(license_id).symbols]
        return list(self.symbol_cache[license_id])

    def _rewrite(self, expression: str) -> str:
        tokens = expression.replace("(", " ( ").replace(")", " ) ").split()
        out = []
        for token in tokens:
            if token in ("(", ")", "AND", "OR", "WITH") or not self._needs_ref(token):
                out.append(token)
            else:
                ref = license_ref(token)
                self.refs[ref] = token
                out.append(ref)
        return " ".join(out)

    def _needs_ref(self, token: str) -> bool:
        return token.startswith("LicenseRef-") or bool(self.spdx.validate(token).errors)

    def extracted(self) -> list[Any]:
        from spdx_tools.spdx.model import ExtractedLicensingInfo

        from builder.licensing import license_info

        out = []
        for ref, license_id in sorted(self.refs.items()):
            info = license_info(license_id)
            name = info.name if info else license_id
            text = (f"{name}. " + (info.notes if info and info.notes else "")
                    + (f" See {info.url}" if info and info.url else "")).strip()
            out.append(ExtractedLicensingInfo(
                license_id=ref, extracted_text=text, license_name=name,
                cross_references=[info.url] if info and info.url else [],
                comment=f"cleanset licence catalogue id {license_id}",
            ))
        return out


def _file(row: Any, licensing: _Licensing) -> Any:
    return _FileValues.of(row).file(row["license"], licensing)


@dataclass(frozen=True)
class _FileValues:
    """What a sample's File says of that sample alone (its licence aside)."""

    name: str
    spdx_id: str
    sha1: str
    sha256: str
    credit: str | None
    comment: str | None
    creator: str | None
    # The credit the source gave (attribution.py's source_credit): a second attribution text.
    source_credit: str | None = None

    @classmethod
    def of(cls, row: Any) -> _FileValues:
        from builder.exports.attribution import source_credit

        prov = json.loads(row["provenance"])
        source = prov.get("source") or {}
        comment = "; ".join(f"{label}: {value}" for label, value in (
            ("file_url", source.get("file_url") or row["file_url"]),
            ("landing_url", source.get("landing_url") or row["landing_url"]),
            ("source", f"{row['source']} {row['source_id']}"),
        ) if value)
        return cls(name=f"./shards/{shard_name(row['shard'])}/{row['key']}.{row['ext']}",
                   spdx_id=file_spdx_id(row["key"]), sha1=row["sha1"], sha256=row["sha256"],
                   credit=(prov.get("attribution") or {}).get("text") or None,
                   comment=comment or None, creator=row["creator"] or None,
                   source_credit=source_credit(prov.get("attribution") or {}))

    @property
    def attribution_texts(self) -> list[str]:
        return [t for t in (self.credit, self.source_credit) if t is not None]

    def file(self, license_id: str, licensing: _Licensing) -> Any:
        from spdx_tools.spdx.model import (
            Checksum,
            ChecksumAlgorithm,
            File,
            FileType,
            SpdxNoAssertion,
        )

        return File(
            name=self.name, spdx_id=self.spdx_id,
            checksums=[Checksum(ChecksumAlgorithm.SHA1, self.sha1),
                       Checksum(ChecksumAlgorithm.SHA256, self.sha256)],
            file_types=[FileType.IMAGE],
            license_concluded=licensing.expression(license_id),
            license_info_in_file=licensing.symbols(license_id),
            copyright_text=self.credit or SpdxNoAssertion(),
            comment=self.comment,
            attribution_texts=self.attribution_texts,
            contributors=[self.creator] if self.creator else [],
        )

    def put_into(self, form: dict[str, Any]) -> dict[str, Any]:
        """`form`, the converted File of another sample of this shape, saying this sample."""
        filled = {**form, "SPDXID": self.spdx_id, "fileName": self.name,
                  "checksums": [{**checksum, "checksumValue": value} for checksum, value
                                in zip(form["checksums"], (self.sha1, self.sha256),
                                       strict=True)]}
        if self.credit is not None:
            filled["copyrightText"] = self.credit
        if self.attribution_texts:
            filled["attributionTexts"] = self.attribution_texts
        if self.comment is not None:
            filled["comment"] = self.comment
        if self.creator is not None:
            filled["fileContributors"] = [self.creator]
        return filled


def _package(facts: Facts, verification_code: str, licensing: _Licensing) -> Any:
    from spdx_tools.spdx.model import (
        Package,
        PackagePurpose,
        PackageVerificationCode,
        SpdxNoAssertion,
    )

    mix = ", ".join(f"{lic}: {n}" for lic, n in facts.licenses.most_common())
    seen: dict[str, Any] = {}
    for lic in sorted(facts.licenses):
        for symbol in licensing.symbols(lic):
            seen.setdefault(str(symbol), symbol)
    return Package(
        name=facts.name, spdx_id=PACKAGE_ID, version=facts.version,
        download_location=SpdxNoAssertion(), supplier=_supplier(facts),
        homepage=facts.homepage or SpdxNoAssertion(),
        files_analyzed=True,
        verification_code=PackageVerificationCode(verification_code),
        license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
        license_info_from_files=list(seen.values()),
        license_comment=f"Each file carries its own licence. Licence mix: {mix or 'empty'}.",
        copyright_text=SpdxNoAssertion(),
        summary=f"Image dataset of {facts.samples} samples built by cleanset.",
        description=facts.description or None,
        primary_package_purpose=PackagePurpose.OTHER,
        comment=_package_comment(facts),
    )


def _supplier(facts: Facts) -> Any:
    """The maintainers distribute the dataset: the supplier, named with the recipe's contact
    email. (The originators are the images' creators, named per File.)"""
    from spdx_tools.spdx.model import Actor, ActorType, SpdxNoAssertion

    if not facts.contact:
        return SpdxNoAssertion()
    return Actor(ActorType.ORGANIZATION, f"Maintainers of {facts.name}", facts.contact_email)


def _package_comment(facts: Facts) -> str | None:
    # An SPDX actor holds an email only: a contact URL, and the citation, go in the comment.
    lines = []
    if facts.contact and not facts.contact_email:
        lines.append(f"Contact: {facts.contact}")
    if facts.citation:
        lines.append(f"Cite as: {facts.citation}")
    if facts.evidence:
        records = sum(f["records"] for f in facts.evidence)
        lines.append(
            f"Evidence archive: {len(facts.evidence)} WARC 1.1 file(s) in evidence/ holding "
            f"{records} responses (API pages, robots.txt / ai.txt / tdmrep.json, image "
            "headers) as the sources gave them, API keys removed; each sample's provenance "
            "`evidence` names the records its licence and download were decided from.")
    return "\n".join(lines) or None


def _namespace(facts: Facts, keys: Iterable[str]) -> str:
    # Unique per content (a changed dataset gets a new namespace), stable across rewrites.
    digest = hashlib.sha256()
    for key in keys:
        digest.update(file_spdx_id(key).encode() + b"\0")
    name = _NOT_ID_CHARS.sub("-", facts.name)
    return (f"https://spdx.org/spdxdocs/cleanset-{name}-{facts.version}-"
            f"{uuid.UUID(bytes=digest.digest()[:16])}")


def _tool_actor() -> Any:
    from spdx_tools.spdx.model import Actor, ActorType

    return Actor(ActorType.TOOL, f"cleanset-{tool_version()}")


def check_spdx(out: Path, ledger: Ledger, facts: Facts,
               samples: dict[str, tuple[str, str]]) -> list[str]:
    """spdx.json against the ledger: same version, same files, same checksums."""
    path = out / "spdx.json"
    if not path.exists():
        return ["spdx.json is missing"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return [f"spdx.json is not valid JSON: {exc}"]
    problems = []
    package = next((p for p in doc.get("packages", []) if p.get("SPDXID") == PACKAGE_ID), {})
    if str(package.get("versionInfo")) != facts.version:
        problems.append(f"spdx.json: dataset version {package.get('versionInfo')} differs from "
                        f"the ledger's {facts.version}")
    listed: dict[str, dict[str, str]] = {}
    for f in doc.get("files", []):
        sums = {c["algorithm"]: c["checksumValue"] for c in f.get("checksums", [])}
        listed[f["SPDXID"]] = sums
    expected = {file_spdx_id(k): v for k, v in samples.items()}
    if len(listed) != len(expected):
        problems.append(f"spdx.json lists {len(listed)} files; the manifest has "
                        f"{len(expected)} samples")
    for spdx_id in sorted(set(expected) - set(listed)):
        problems.append(f"spdx.json: no File {spdx_id}")
    for spdx_id in sorted(set(listed) - set(expected)):
        problems.append(f"spdx.json: File {spdx_id} is not in the manifest")
    for spdx_id, (sha1, sha256) in expected.items():
        sums = listed.get(spdx_id)
        if sums is not None and (sums.get("SHA1") != sha1 or sums.get("SHA256") != sha256):
            problems.append(f"spdx.json: File {spdx_id} checksums differ from the manifest")
    return problems
