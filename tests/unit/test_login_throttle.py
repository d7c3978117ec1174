"""The login throttle on its own: limits per (username, address) and per address, attempts in
flight counted before their outcome, and waiters that are never stranded."""

from __future__ import annotations

import asyncio
import random

import pytest

from web.ratelimit import LoginThrottle, Outcome

ADDRESS = "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, *, pair: int = 5, address: int = 50, wait_s: float = 10.0):
    return LoginThrottle(
        failures_allowed=pair,
        failures_allowed_per_address=address,
        window_s=60.0,
        clock=clock,
        max_wait_s=wait_s,
    )


class Checker:
    """Stands in for the password check: counts attempts in flight and at most how many."""

    def __init__(self, limit: LoginThrottle) -> None:
        self.limit = limit
        self.in_flight = 0
        self.most_in_flight = 0
        self.checked = 0

    async def login(self, username: str, address: str, outcome: Outcome) -> int:
        wait_s = await self.limit.admit(username, address)
        if wait_s:
            return wait_s
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # the hash, during which others arrive
            self.checked += 1
        finally:
            self.in_flight -= 1
            self.limit.finished(username, address, outcome)
        return 0


async def test_a_burst_of_wrong_guesses_gets_only_the_allowed_checks() -> None:
    checker = Checker(throttle(Clock()))
    answers = await asyncio.gather(*(checker.login("bob", ADDRESS, "failed") for _ in range(40)))
    assert checker.checked == 5
    assert sorted(answers)[:5] == [0] * 5
    assert all(wait_s == 60 for wait_s in sorted(answers)[5:])


async def test_a_burst_of_right_passwords_all_get_in_a_few_at_a_time() -> None:
    checker = Checker(throttle(Clock()))
    answers = await asyncio.gather(*(checker.login("bob", ADDRESS, "succeeded") for _ in range(40)))
    assert answers == [0] * 40
    assert checker.most_in_flight == 5


async def test_one_address_spraying_many_usernames_is_stopped_by_the_address_limit() -> None:
    checker = Checker(throttle(Clock(), address=20))
    answers = await asyncio.gather(
        *(checker.login(f"user{n}", ADDRESS, "failed") for n in range(100))
    )
    assert checker.checked == 20
    assert answers.count(0) == 20
    # Another address is not affected, nor is the same username from it.
    assert await checker.login("user0", "203.0.113.9", "failed") == 0


async def test_many_right_passwords_from_one_address_all_get_in() -> None:
    checker = Checker(throttle(Clock(), address=20))
    answers = await asyncio.gather(
        *(checker.login(f"user{n}", ADDRESS, "succeeded") for n in range(100))
    )
    assert answers == [0] * 100
    assert checker.most_in_flight == 20


async def test_a_success_clears_its_pair_not_the_address() -> None:
    clock = Clock()
    checker = Checker(throttle(clock, pair=3, address=5))
    for _ in range(2):
        assert await checker.login("bob", ADDRESS, "failed") == 0
    assert await checker.login("bob", ADDRESS, "succeeded") == 0
    for _ in range(3):  # bob's slate is clean again...
        assert await checker.login("bob", ADDRESS, "failed") == 0
    # ... but the address has 5 failures now.
    assert await checker.login("carol", ADDRESS, "failed") == 60
    clock.now += 61
    assert await checker.login("carol", ADDRESS, "failed") == 0


async def test_an_unchecked_attempt_is_held_against_no_one() -> None:
    checker = Checker(throttle(Clock(), pair=2))
    for _ in range(10):
        assert await checker.login("bob", ADDRESS, "unchecked") == 0
    assert checker.limit.tracked_keys() == 0


async def test_refused_and_finished_attempts_leave_no_keys_behind() -> None:
    """Memory grows only with failures inside the window."""
    clock = Clock()
    checker = Checker(throttle(clock, pair=1, address=1000))
    for n in range(100):
        await checker.login(f"user{n}", ADDRESS, "succeeded")
    assert checker.limit.tracked_keys() == 0
    await checker.login("bob", ADDRESS, "failed")
    for _ in range(100):
        assert await checker.login("bob", ADDRESS, "succeeded") == 60
    assert checker.limit.tracked_keys() == 2  # bob's pair and the address


async def test_waiting_is_bounded_by_the_longest_wait() -> None:
    limit = throttle(Clock(), pair=1, wait_s=0.05)
    assert await limit.admit("bob", ADDRESS) == 0  # and never finishes
    assert await limit.admit("bob", ADDRESS) == 1
    limit.finished("bob", ADDRESS, "succeeded")
    assert await limit.admit("bob", ADDRESS) == 0


async def test_a_waiter_that_times_out_passes_its_turn_on() -> None:
    limit = throttle(Clock(), pair=1, wait_s=0.2)
    assert await limit.admit("bob", ADDRESS) == 0
    impatient = asyncio.create_task(limit.admit("bob", ADDRESS))
    patient = asyncio.create_task(limit.admit("bob", ADDRESS))
    await asyncio.sleep(0.01)
    impatient.cancel()  # a client that leaves while waiting
    limit.finished("bob", ADDRESS, "succeeded")
    assert await asyncio.wait_for(patient, 1.0) == 0


@pytest.mark.parametrize("seed", range(60))
async def test_random_crowds_never_exceed_a_limit_or_strand_a_waiter(seed: int) -> None:
    rng = random.Random(seed)
    pair_limit, address_limit = rng.randint(1, 4), rng.randint(2, 8)
    checker = Checker(throttle(Clock(), pair=pair_limit, address=address_limit, wait_s=30))
    usernames = [f"user{n}" for n in range(rng.randint(1, 6))]
    addresses = [f"10.0.0.{n}" for n in range(rng.randint(1, 3))]
    outcomes: list[Outcome] = ["succeeded", "failed", "unchecked"]
    in_flight: dict[object, int] = {}
    worst: dict[object, int] = {}

    async def login(username: str, address: str, outcome: Outcome) -> int:
        await asyncio.sleep(rng.random() * 0.005)
        wait_s = await checker.limit.admit(username, address)
        if wait_s:
            return wait_s
        for key in ((username, address), address):
            in_flight[key] = in_flight.get(key, 0) + 1
            worst[key] = max(worst.get(key, 0), in_flight[key])
        await asyncio.sleep(rng.random() * 0.003)
        for key in ((username, address), address):
            in_flight[key] -= 1
        checker.limit.finished(username, address, outcome)
        return 0

    crowd = [
        login(rng.choice(usernames), rng.choice(addresses), rng.choice(outcomes))
        for _ in range(rng.randint(20, 120))
    ]
    async with asyncio.timeout(10):  # a stranded waiter would hang here
        await asyncio.gather(*crowd)
    for key, most in worst.items():
        assert most <= (pair_limit if isinstance(key, tuple) else address_limit), key


async def test_memory_holds_only_the_last_windows_failures() -> None:
    """A spray of distinct names and addresses once stayed in memory for good (until
    100,000 keys), long after its window had passed."""
    clock = Clock()
    checker = Checker(throttle(clock, pair=5, address=50))
    for n in range(1000):
        assert await checker.login(f"user{n}", f"10.0.{n // 250}.{n % 250}", "failed") == 0
    assert checker.limit.tracked_keys() == 2000
    clock.now += 61  # the window has passed for all of them
    assert await checker.login("late", ADDRESS, "failed") == 0
    assert checker.limit.tracked_keys() == 2  # the late pair and its address
    # Within a window nothing is forgotten early.
    clock.now += 30
    assert await checker.login("later", ADDRESS, "failed") == 0
    assert checker.limit.tracked_keys() == 3
