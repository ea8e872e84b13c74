# SPDX-License-Identifier: GPL-2.0-or-later
"""The agent broker: registration rules, agent choice, timeouts, withdrawal, secrets."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Variant

from escd.agents import AgentBroker, AgentRecord, Answers, capabilities_for
from escd.dbus_service.agent import answers_from, prompt_vardict
from escd.errors import CanceledError, InvalidArgumentError, NoAgentError, PromptTimeoutError
from escd.log import Secret
from escd.operation import CONFIRM_FORMAT_PROMPT
from escd.tps.session import FieldType, Prompt, PromptField, PromptKind

LOGIN = Prompt(
    PromptKind.EXTENDED_LOGIN,
    (
        PromptField("UID", "LDAP User ID", FieldType.TEXT),
        PromptField("PASSWORD", "LDAP Password", FieldType.SECRET),
    ),
    title="LDAP Authentication",
)
NEW_PIN = Prompt(
    PromptKind.NEW_PIN,
    (PromptField("new_pin", "New PIN", FieldType.PIN, confirm=True, min_length=4, max_length=10),),
)


class RecordingChannel:
    """A behavioural fake of the bus side: answers from a table, or never (``hang``)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []
        self.canceled: list[tuple[str, str]] = []
        self.released: list[str] = []
        self.answers: dict[str, Answers] = {}
        self.hang = False
        self.error: Exception | None = None
        self.asking = asyncio.Event()

    async def request_input(
        self, agent: AgentRecord, job: str, request_id: str, prompt: Prompt
    ) -> Answers:
        self.asked.append((agent.owner, job, request_id))
        self.asking.set()
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        return dict(self.answers.get(agent.owner, {}))

    def cancel_request(self, agent: AgentRecord, request_id: str) -> None:
        self.canceled.append((agent.owner, request_id))

    def release(self, agent: AgentRecord) -> None:
        self.released.append(agent.path)


def broker(timeout: float = 5.0) -> tuple[AgentBroker, RecordingChannel]:
    channel = RecordingChannel()
    return AgentBroker(channel, timeout=lambda: timeout), channel


def test_capabilities_needed_follow_the_field_types() -> None:
    assert capabilities_for(LOGIN) == {"text", "secret"}
    assert capabilities_for(NEW_PIN) == {"secret"}
    assert capabilities_for(CONFIRM_FORMAT_PROMPT) == {"confirm"}
    assert capabilities_for(Prompt(PromptKind.TLS_TRUST, ())) == {"tls-trust"}


def test_choice_is_starter_then_default_then_any_capable() -> None:
    agents, _ = broker()
    agents.register(":1.1", "/any", capabilities=frozenset({"confirm"}))
    agents.register(":1.2", "/default", default=True)
    agents.register(":1.3", "/mine", capabilities=frozenset({"secret"}))
    assert agents.choose(":1.3", frozenset({"secret"})).path == "/mine"
    assert agents.choose(":1.3", frozenset({"text", "secret"})).path == "/default"
    assert agents.choose(":1.9", frozenset({"confirm"})).path == "/default"
    agents.unregister(":1.2", "/default")
    assert agents.choose(":1.9", frozenset({"confirm"})).path == "/any"
    with pytest.raises(NoAgentError):
        agents.choose(":1.9", frozenset({"tls-trust"}))


def test_registration_rules() -> None:
    agents, channel = broker()
    with pytest.raises(NoAgentError):
        agents.choose(":1.1", frozenset())
    with pytest.raises(InvalidArgumentError):
        agents.register(":1.1", "/a", capabilities=frozenset({"telepathy"}))
    agents.register(":1.1", "/a", default=True)
    agents.register(":1.1", "/b")  # one per connection: the new object replaces the old
    assert [agent.path for agent in agents.agents()] == ["/b"]
    assert channel.released == ["/a"]
    agents.register(":1.2", "/c", default=True)
    agents.register(":1.3", "/d", default=True)  # the newest default wins
    assert [agent.path for agent in agents.agents() if agent.default] == ["/d"]
    with pytest.raises(InvalidArgumentError):
        agents.unregister(":1.2", "/other")
    agents.peer_vanished(":1.3")
    assert {agent.owner for agent in agents.agents()} == {":1.1", ":1.2"}
    agents.close()
    assert agents.agents() == [] and set(channel.released) == {"/a", "/b", "/c"}


async def test_ask_returns_only_the_prompts_fields_and_drops_the_rest() -> None:
    agents, channel = broker()
    agents.register(":1.1", "/a")
    stray = Secret("stray")
    channel.answers[":1.1"] = {"UID": "jdoe", "PASSWORD": Secret("pw"), "extra": stray}
    answers = await agents.ask("/job/1", ":1.1", LOGIN)
    assert set(answers) == {"UID", "PASSWORD"}
    assert len(stray) == 0  # dropped
    assert channel.asked == [(":1.1", "/job/1", "1")]


async def test_a_prompt_that_times_out_is_withdrawn() -> None:
    agents, channel = broker(timeout=0.05)
    agents.register(":1.1", "/a")
    channel.hang = True
    with pytest.raises(PromptTimeoutError):
        await agents.ask("/job/1", ":1.1", NEW_PIN)
    assert channel.canceled == [(":1.1", "1")]


async def test_a_cancelled_ask_withdraws_the_prompt() -> None:
    agents, channel = broker()
    agents.register(":1.1", "/a")
    channel.hang = True
    task = asyncio.ensure_future(agents.ask("/job/1", ":1.1", NEW_PIN))
    async with asyncio.timeout(5):
        await channel.asking.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert channel.canceled == [(":1.1", "1")]


async def test_agent_errors_pass_through() -> None:
    agents, channel = broker()
    agents.register(":1.1", "/a")
    channel.error = CanceledError("no")
    with pytest.raises(CanceledError):
        await agents.ask("/job/1", ":1.1", NEW_PIN)
    assert channel.canceled == []


def test_prompt_dictionary_has_the_contract_keys_and_types() -> None:
    values = prompt_vardict(NEW_PIN)
    assert {key: variant.signature for key, variant in values.items()} == {
        "kind": "s",
        "title": "s",
        "description": "s",
        "locale": "s",
        "fields": "aa{sv}",
        "attempt": "u",
        "previous_error": "s",
    }
    (field,) = values["fields"].value
    assert {key: variant.value for key, variant in field.items()} == {
        "id": "new_pin",
        "label": "New PIN",
        "type": "pin",
        "description": "",
        "options": [],
        "confirm": True,
        "min_length": 4,
        "max_length": 10,
    }


def test_answers_wrap_secrets_at_once_and_ignore_wrong_types() -> None:
    answers = answers_from(
        {
            "UID": Variant("s", "jdoe"),
            "PASSWORD": Variant("s", "pw"),
            "unknown": Variant("s", "x"),
        },
        LOGIN,
    )
    assert answers["UID"] == "jdoe"
    password = answers["PASSWORD"]
    assert isinstance(password, Secret) and password.reveal() == "pw"
    assert "pw" not in repr(answers)
    assert answers_from({"UID": Variant("u", 5)}, LOGIN) == {}
    confirm = answers_from({"confirm": Variant("b", True)}, CONFIRM_FORMAT_PROMPT)
    assert confirm == {"confirm": True}
    assert answers_from({"confirm": Variant("s", "yes")}, CONFIRM_FORMAT_PROMPT) == {}
