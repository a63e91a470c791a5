"""BrokerSource against the real Redis and RabbitMQ on this machine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import kombu
import pytest
from loopback_proxy import LoopbackProxy, free_port, silent_port

from airflow_ops.airflow.broker import BrokerSource, redact_url
from airflow_ops.airflow.source import SourceError
from airflow_ops.config import BrokerConfig, Secret

BROKERS = {
    "redis": ("redis", "", "/0", 6379),
    "rabbitmq": ("amqp", "guest:guest@", "//", 5672),
}


def broker_url(kind: str, port: int | None = None) -> str:
    scheme, userinfo, path, default_port = BROKERS[kind]
    return f"{scheme}://{userinfo}127.0.0.1:{port or default_port}{path}"


def source_for(url: str, *queues: str, timeout: float = 3.0) -> BrokerSource:
    return BrokerSource("test", BrokerConfig(url=Secret(url), queues=queues, timeout=timeout))


@pytest.fixture(params=sorted(BROKERS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def queue_name(kind: str) -> Iterator[str]:
    name = f"airflow-ops-test-{uuid.uuid4().hex[:12]}"
    yield name
    with kombu.Connection(broker_url(kind)) as conn:
        kombu.Queue(name, channel=conn.channel()).delete()


def publish(url: str, queue: str, n: int, priority: int | None = None) -> None:
    # Publisher confirms: RabbitMQ counts a message only once its queue has taken it.
    with (
        kombu.Connection(url, transport_options={"confirm_publish": True}) as conn,
        conn.Producer() as producer,
    ):
        for i in range(n):
            producer.publish({"i": i}, routing_key=queue, declare=[kombu.Queue(queue)], priority=priority)


def consume_all(url: str, queue: str) -> int:
    taken = 0
    with kombu.Connection(url) as conn:
        q = kombu.Queue(queue, channel=conn.channel())
        while q.get(no_ack=True) is not None:
            taken += 1
    return taken


def test_counts_published_then_consumed_messages(kind: str, queue_name: str) -> None:
    url = broker_url(kind)
    src = source_for(url, queue_name, "default")
    try:
        assert src.poll(time.time()).queues[queue_name] == 0  # not declared yet
        publish(url, queue_name, 7)
        state = src.poll(time.time())
        assert state.queues[queue_name] == 7
        assert set(state.queues) == {queue_name, "default"}
        assert consume_all(url, queue_name) == 7
        assert src.poll(time.time()).queues[queue_name] == 0
    finally:
        src.close()


def test_redis_counts_celery_priority_lists(queue_name: str) -> None:
    """kombu's Redis transport stores prioritised messages in sibling lists; they all wait."""
    url = broker_url("redis")
    publish(url, queue_name, 3)
    publish(url, queue_name, 2, priority=9)
    src = source_for(url, queue_name)
    try:
        assert src.poll(time.time()).queues[queue_name] == 5
    finally:
        src.close()


def test_missing_queue_is_zero_and_does_not_break_the_next_one(kind: str, queue_name: str) -> None:
    url = broker_url(kind)
    publish(url, queue_name, 2)
    missing = f"airflow-ops-missing-{uuid.uuid4().hex[:12]}"
    # On RabbitMQ the 404 for the first queue closes the channel; the second must still be read.
    src = source_for(url, missing, queue_name)
    try:
        assert dict(src.poll(time.time()).queues) == {missing: 0, queue_name: 2}
        assert dict(src.poll(time.time()).queues) == {missing: 0, queue_name: 2}
    finally:
        src.close()


def test_closed_port_is_a_connect_error(kind: str) -> None:
    src = source_for(broker_url(kind, free_port()), "default")
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        src.poll(time.time())
    assert err.value.reason == "connect"
    assert time.monotonic() - started < 2  # no kombu retry sleeps
    assert "guest:guest" not in str(err.value)


def test_broker_going_away_and_coming_back(kind: str, queue_name: str) -> None:
    url = broker_url(kind)
    publish(url, queue_name, 4)
    scheme, userinfo, path, port = BROKERS[kind]
    with LoopbackProxy("127.0.0.1", port) as proxy:
        src = source_for(proxy.url(scheme, userinfo, path), queue_name)
        try:
            assert src.poll(time.time()).queues[queue_name] == 4
            proxy.stop()
            with pytest.raises(SourceError) as err:
                src.poll(time.time())
            assert err.value.reason == "connect"
            proxy.start()
            assert src.poll(time.time()).queues[queue_name] == 4
        finally:
            src.close()


def test_silent_broker_times_out(kind: str) -> None:
    """A peer that accepts TCP but never answers must not hold the poll beyond the timeout."""
    scheme, userinfo, path, _ = BROKERS[kind]
    with silent_port() as port:
        src = source_for(f"{scheme}://{userinfo}127.0.0.1:{port}{path}", "q", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            src.poll(time.time())
        assert err.value.reason == "timeout"
        assert time.monotonic() - started < 3
        src.close()


def test_wrong_password_is_auth_error_without_the_password() -> None:
    src = source_for("amqp://guest:not-the-password@127.0.0.1:5672//", "default")
    with pytest.raises(SourceError) as err:
        src.poll(time.time())
    assert err.value.reason == "auth"
    assert "not-the-password" not in str(err.value)
    assert "guest:***@127.0.0.1" in str(err.value)


def test_redact_url() -> None:
    assert redact_url("amqp://u:p4ss@h:5672//") == "amqp://u:***@h:5672//"
    assert redact_url("redis://:p4ss@h/0") == "redis://:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
