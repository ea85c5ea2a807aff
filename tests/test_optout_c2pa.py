"""C2PA / CAWG training-and-data-mining assertions, on images signed in the test.

Needs the optional extra (`pip install cleanset[c2pa]`) and `cryptography` to make a test
certificate chain; skipped with that reason when either is missing.
"""

from __future__ import annotations

import datetime
import io
import json

import pytest

from builder.fetch import Fetcher
from builder.licensing import load_policy
from builder.optout import OptoutConfig, OptoutGate
from builder.optout import c2pa as c2pa_mod
from builder.optout.denylist import Denylist
from builder.recipe import FetchConfig, ImageConfig
from builder.records import Candidate, Checked, Evidence, Rejection
from builder.stages import fetch_stage, image_check, licence_gate
from tests.conftest import make_image

c2pa = pytest.importorskip("c2pa", reason="the c2pa extra is not installed (cleanset[c2pa])")
pytest.importorskip("cryptography", reason="cryptography is needed to make a test certificate")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cleanset tests")])


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=sign, crl_sign=sign, encipher_only=False,
                         decipher_only=False)


@pytest.fixture(scope="module")
def signer():
    """A root CA and a leaf signing certificate (C2PA refuses self-signed signers)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, public, signing_key, *, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(_usage(sign=ca), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                  critical=False))
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    root = cert(_name("test root"), _name("test root"), ca_key.public_key(), ca_key, ca=True)
    leaf = cert(_name("test signer"), root.subject, key.public_key(), ca_key, ca=False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=pem, ta_url=None)
    return c2pa.Signer.from_info(info)


def signed_jpeg(signer, assertions: list[dict], *, source: str = CAPTURE, seed: int = 1) -> bytes:
    manifest = {
        "claim_generator_info": [{"name": "cleanset-tests", "version": "1"}],
        "title": "test image",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": source}]}}, *assertions],
    }
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg",
                                            io.BytesIO(make_image(seed)), out)
    return out.getvalue()


def training(label: str, entry: str, use: str) -> dict:
    return {"label": label, "data": {"entries": {entry: {"use": use}}}}


def check(httpserver, data: bytes, *, library: bool = True, **options) -> Checked | Rejection:
    """`library=False`: the gate as a build without the c2pa extra has it."""
    httpserver.clear_all_handlers()  # a second image of a test is served at the same path
    httpserver.no_handler_status_code = 404
    httpserver.expect_request("/c.jpg").respond_with_data(data, content_type="image/jpeg")
    config = FetchConfig(allow_private_addresses=True, retries=0, timeout_s=5)
    with Fetcher(config) as fetcher:
        policy = load_policy("commercial")
        gate = OptoutGate(OptoutConfig(**options), fetcher=fetcher, denylist=Denylist(),
                          policy=policy, c2pa_available=None if library else False)
        assert gate.c2pa is library
        cand = Candidate(source="t", source_id="c", url=httpserver.url_for("/c.jpg"),
                         evidence=(Evidence("license", CC0),))
        record = licence_gate(cand, policy=policy)
        for stage in (gate.before_fetch,
                      lambda r: fetch_stage(r, fetcher=fetcher, max_bytes=5_000_000),
                      gate.after_fetch, lambda r: image_check(r, config=ImageConfig()),
                      gate.after_check):
            record = stage(record)
            if isinstance(record, Rejection):
                break
        return record


@pytest.mark.parametrize("label,entry,use", [
    ("cawg.training-mining", "cawg.ai_training", "notAllowed"),
    ("cawg.training-mining", "cawg.ai_generative_training", "constrained"),
    ("c2pa.training-mining", "c2pa.data_mining", "notAllowed"),
])
def test_signed_c2pa_training_restriction_is_refused(label, entry, use, httpserver,
                                                     signer) -> None:
    result = check(httpserver, signed_jpeg(signer, [training(label, entry, use)]))
    assert isinstance(result, Rejection) and result.reason.value == "optout_embedded", result
    assert label in result.detail and f"{entry}={use}" in result.detail


def test_signed_c2pa_that_allows_training_is_admitted_and_recorded(httpserver, signer) -> None:
    data = signed_jpeg(signer, [training("cawg.training-mining", "cawg.ai_training", "allowed")])
    result = check(httpserver, data)
    assert isinstance(result, Checked), result
    assert dict(result.optout)["c2pa"] == "1 manifest(s), no training restriction"


def test_signed_c2pa_declaring_ai_generation_is_refused_as_ai_generated(httpserver,
                                                                        signer) -> None:
    result = check(httpserver, signed_jpeg(signer, [], source=AI_SOURCE, seed=2))
    assert isinstance(result, Rejection) and result.reason.value == "ai_generated", result
    assert "trainedAlgorithmicMedia" in result.detail


def test_unsigned_image_records_c2pa_as_absent(httpserver) -> None:
    result = check(httpserver, make_image(3))
    assert isinstance(result, Checked)
    assert dict(result.optout)["c2pa"] == "absent"


def damaged(data: bytes, at: bytes, offset: int) -> bytes:
    """`data` with 8 bytes flipped `offset` bytes after `at`: the store no longer parses."""
    out = bytearray(data)
    start = data.find(at) + offset
    for i in range(start, start + 8):
        out[i] ^= 0xFF
    return bytes(out)


def test_a_manifest_that_cannot_be_read_is_searched_as_text_for_a_refusal(
        httpserver, signer) -> None:
    """A damaged store was recorded "manifest unreadable" and the image admitted, though
    its bytes still said cawg.ai_training notAllowed."""
    data = signed_jpeg(signer, [training("cawg.training-mining", "cawg.ai_training",
                                         "notAllowed")])
    broken = damaged(data, b"cawg.ai_training", 40)
    assert c2pa_mod.read(broken, "image/jpeg").problem.startswith("manifest unreadable")
    result = check(httpserver, broken)
    assert isinstance(result, Rejection) and result.reason.value == "optout_embedded", result
    detail = result.detail
    assert "cawg.ai_training=notAllowed (found as text in a manifest store that cannot be " \
           "read)" in detail


def test_without_the_c2pa_extra_a_refusal_in_the_store_is_still_found(
        httpserver, signer) -> None:
    data = signed_jpeg(signer, [training("c2pa.training-mining", "c2pa.ai_generative_training",
                                         "constrained")])
    result = check(httpserver, data, library=False)
    assert isinstance(result, Rejection) and result.reason.value == "optout_embedded", result
    detail = result.detail
    assert "c2pa.ai_generative_training=constrained" in detail and "not installed" in detail
    allowed = signed_jpeg(signer, [training("cawg.training-mining", "cawg.ai_training",
                                            "allowed")], seed=2)
    result = check(httpserver, allowed, library=False)
    assert isinstance(result, Checked), result
    assert dict(result.optout)["c2pa"].startswith("not checked: c2pa-python missing")
