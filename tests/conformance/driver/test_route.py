"""route_register and route_list: which queue serves which job name."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver


async def test_routes_are_remembered_and_the_latest_declaration_wins(driver: Driver) -> None:
    assert await driver.route_list() == {}
    await driver.route_register({"email.send": "emails", "webhook.deliver": "webhooks"})
    await driver.route_register({"email.send": "mail"})
    await driver.route_register({})
    assert await driver.route_list() == {"email.send": "mail", "webhook.deliver": "webhooks"}
