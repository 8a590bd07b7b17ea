"""Document references and reply/forward subjects (xtmail.sync.mail.refs)."""

from __future__ import annotations

import pytest

from xtmail.sync.mail.refs import (
    Reference,
    add_reference,
    compose_subject,
    find_references,
    forward_subject,
    normalize_subject,
    reply_subject,
)
from xtmail.sync.mail.registry import DOCUMENT_TYPES, DocumentType

S_50123 = Reference("S", "50123")


class TestReference:
    def test_token_and_str(self) -> None:
        assert S_50123.token == "[xtref:S-50123]"
        assert str(S_50123) == "[xtref:S-50123]"

    def test_code_is_upper_cased(self) -> None:
        ref = Reference("crma", "TTOYS")
        assert ref.code == "CRMA"
        assert ref == Reference("CRMA", "TTOYS")

    def test_unknown_code_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown document code"):
            Reference("XX", "1")

    @pytest.mark.parametrize("number", ["", "-1", "1 2", "1]", "\uff150"])
    def test_number_that_would_not_parse_back_is_refused(self, number: str) -> None:
        with pytest.raises(ValueError, match="cannot be written"):
            Reference("S", number)

    @pytest.mark.parametrize("doc", DOCUMENT_TYPES, ids=lambda d: d.code)
    def test_every_registry_code_round_trips(self, doc: DocumentType) -> None:
        ref = Reference(doc.code, "A1-2.3/4")
        assert find_references(f"x {ref.token} y") == [ref]


class TestFindReferences:
    def test_simple(self) -> None:
        assert find_references("Order [xtref:S-50123]") == [S_50123]

    def test_case_insensitive_anywhere(self) -> None:
        text = "see [XTREF:s-50123] and\nalso[XtRef:q-77]in the body"
        assert find_references(text) == [S_50123, Reference("Q", "77")]

    def test_code_is_upper_cased_number_keeps_spelling(self) -> None:
        (ref,) = find_references("[xtref:crma-TToys]")
        assert ref.code == "CRMA"
        assert ref.number == "TToys"

    def test_longest_code_wins(self) -> None:
        assert find_references("[xtref:TO-10001] [xtref:T-10001] [xtref:TD-5]") == [
            Reference("TO", "10001"),
            Reference("T", "10001"),
            Reference("TD", "5"),
        ]

    def test_alphanumeric_numbers(self) -> None:
        assert find_references("[xtref:CRMA-TTOYS] [xtref:V-TPARTS] [xtref:J-PRJ-2024/01.a]") == [
            Reference("CRMA", "TTOYS"),
            Reference("V", "TPARTS"),
            Reference("J", "PRJ-2024/01.a"),
        ]

    def test_blanks_allowed_after_colon_only(self) -> None:
        assert find_references("[xtref: S-50123] [xtref:\tQ-1]") == [S_50123, Reference("Q", "1")]
        text = "[xtref :S-1] [ xtref:S-2] [xtref:S -3] [xtref:S- 4] [xtref:S-5 ]"
        assert find_references(text) == []

    def test_line_break_after_colon_is_not_a_blank(self) -> None:
        assert find_references("[xtref:\nS-1]") == []

    def test_unknown_codes_are_not_references(self) -> None:
        assert find_references("[xtref:XX-1] [xtref:SO-2] [xtref:INC-3] [xtref:S-4]") == [
            Reference("S", "4")
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "[xtref:S-]",
            "[xtref:S-50123",
            "xtref:S-50123",
            "[xtref:S50123]",
            "[xtref:S-.5]",
            "[xtref:S-5 0]",
            "[xtref:S-\uff15]",  # full-width digit
            "[xtref:\u017f-1]",  # long s: must not case-fold to S
            "[xref:S-1]",
        ],
    )
    def test_malformed_tokens_are_ignored(self, text: str) -> None:
        assert find_references(text) == []

    def test_deduplicated_in_order_ignoring_case(self) -> None:
        text = "[xtref:C-ttoys] [xtref:S-2] [xtref:c-TTOYS] [XTREF:S-2] [xtref:S-1]"
        assert find_references(text) == [
            Reference("C", "ttoys"),
            Reference("S", "2"),
            Reference("S", "1"),
        ]

    def test_nothing(self) -> None:
        assert find_references("") == []
        assert find_references("no reference [here]") == []

    def test_large_text_is_fast_enough(self) -> None:
        # A pathological body (many near-tokens) must not make the regex backtrack.
        text = "[xtref:S-" * 20000 + "[xtref:S-1]"
        assert find_references(text) == [Reference("S", "1")]


class TestAddReference:
    def test_appended_at_end_once(self) -> None:
        assert add_reference("Your order", S_50123) == "Your order [xtref:S-50123]"

    def test_trailing_blanks_do_not_double_the_space(self) -> None:
        assert add_reference("Your order  ", S_50123) == "Your order [xtref:S-50123]"

    def test_empty_subject(self) -> None:
        assert add_reference("", S_50123) == "[xtref:S-50123]"
        assert add_reference("   ", S_50123) == "[xtref:S-50123]"

    @pytest.mark.parametrize(
        "subject",
        [
            "Order [xtref:S-50123]",
            "[xtref:S-50123] Order",
            "RE: Order [XTREF:s-50123] shipped",
            "Order [xtref: S-50123]",
        ],
    )
    def test_never_doubled(self, subject: str) -> None:
        assert add_reference(subject, S_50123) == subject

    def test_number_compared_ignoring_case(self) -> None:
        subject = "Account [xtref:CRMA-ttoys]"
        assert add_reference(subject, Reference("CRMA", "TTOYS")) == subject

    def test_other_reference_does_not_count(self) -> None:
        assert (
            add_reference("Order [xtref:S-50124]", S_50123)
            == "Order [xtref:S-50124] [xtref:S-50123]"
        )
        assert add_reference("[xtref:Q-50123]", S_50123) == "[xtref:Q-50123] [xtref:S-50123]"


class TestNormalizeSubject:
    @pytest.mark.parametrize(
        "subject",
        [
            "RE: Order",
            "Re: Order",
            "re : Order",
            "AW: Order",
            "Aw: Order",
            "FW: Order",
            "Fw: Order",
            "Fwd: Order",
            "FWD:Order",
            "WG: Order",
            "SV: Order",
            "VS: Order",
            "Antw: Order",
            "Antwort: Order",
            "TR: Order",
            "RV: Order",
            "Enc: Order",
            "Odp: Order",
            "YNT: Order",
            "RE[2]: Order",
            "Re(3): Order",
            "Re^2: Order",
            "RE [2] : Order",
            "Re: Fwd: RE: Order",
            "  Re:Re:  AW: WG:   Order  ",
            "回复\uff1aOrder",
            "转发: Order",
        ],
    )
    def test_prefixes_removed(self, subject: str) -> None:
        assert normalize_subject(subject) == "Order"

    @pytest.mark.parametrize(
        "subject",
        [
            "Order",
            "Resume: Order",
            "Rework: Order",
            "Fwd Order",
            "Order RE: Order",
            "[list] Re: Order",
            "Area: Order",
            "Reference: Order",
        ],
    )
    def test_other_text_kept(self, subject: str) -> None:
        assert normalize_subject(subject) == subject

    def test_reference_kept(self) -> None:
        assert normalize_subject("RE: FW: Order [xtref:S-50123]") == "Order [xtref:S-50123]"

    def test_only_prefixes(self) -> None:
        assert normalize_subject("Re: ") == ""
        assert normalize_subject("") == ""


class TestReplyForwardSubjects:
    def test_reply_once(self) -> None:
        assert reply_subject("Order") == "RE: Order"
        assert reply_subject("RE: Order") == "RE: Order"
        assert reply_subject("Re: Fwd: AW: Order") == "RE: Order"

    def test_forward_once(self) -> None:
        assert forward_subject("Order") == "FW: Order"
        assert forward_subject("Fwd: FW: Order") == "FW: Order"
        assert forward_subject("RE: Order") == "FW: Order"

    def test_reference_kept_once(self) -> None:
        subject = "RE: Order [xtref:S-50123]"
        assert reply_subject(subject) == "RE: Order [xtref:S-50123]"
        assert forward_subject(subject) == "FW: Order [xtref:S-50123]"

    def test_repeated_reference_collapsed(self) -> None:
        subject = "RE: Order [xtref:S-50123] [XTREF:S-50123] shipped [xtref:S-50123]"
        assert reply_subject(subject) == "RE: Order [xtref:S-50123] shipped"

    def test_empty(self) -> None:
        assert reply_subject("") == "RE:"
        assert forward_subject("FW:") == "FW:"


class TestComposeSubject:
    def test_new_adds_reference(self) -> None:
        assert compose_subject("new", "Your order", S_50123) == "Your order [xtref:S-50123]"

    def test_new_keeps_prefixes_the_user_typed(self) -> None:
        assert compose_subject("new", "RE: pricing", S_50123) == "RE: pricing [xtref:S-50123]"

    def test_new_without_reference(self) -> None:
        assert compose_subject("new", " Hello ", None) == "Hello"

    def test_reply_adds_missing_reference(self) -> None:
        assert compose_subject("reply", "Re: Re: Order", S_50123) == "RE: Order [xtref:S-50123]"

    def test_reply_does_not_double_reference(self) -> None:
        subject = "Re: AW: Order [xtref:s-50123]"
        assert compose_subject("reply", subject, S_50123) == "RE: Order [xtref:s-50123]"

    def test_forward_with_other_document(self) -> None:
        assert (
            compose_subject("forward", "Fwd: Quote [xtref:Q-7]", S_50123)
            == "FW: Quote [xtref:Q-7] [xtref:S-50123]"
        )

    def test_repeated_application_is_stable(self) -> None:
        subject = "Order"
        for _ in range(3):
            subject = compose_subject("reply", subject, S_50123)
            subject = compose_subject("forward", subject, S_50123)
        assert subject == "FW: Order [xtref:S-50123]"
