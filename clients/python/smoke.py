"""End-to-end smoke test of the generated Python client against a running server.

Run by clients/smoke. Environment: TENANTRY_ADDR (host:port), TENANTRY_TOKEN (a
ROOT_ADMIN token), TENANTRY_SYSTEM_TOKEN (a SYSTEM token: RecordUsage is for internal
services and API keys). Stops at the first failed check; exits 1 if any failed.
"""

import os
import sys
import uuid
from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2

from tenantry.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    common_pb2,
    organization_pb2,
    organization_pb2_grpc,
)
from tenantry_client import connect, error_details

TIMEOUT = 10  # seconds per call
QUANTITY = 1200
COST = "0.36"


class Failed(Exception):
    """A check did not hold."""


class Smoke:
    def __init__(self) -> None:
        addr = os.environ["TENANTRY_ADDR"]
        admin = connect(addr, token=os.environ["TENANTRY_TOKEN"])
        system = connect(addr, token=os.environ["TENANTRY_SYSTEM_TOKEN"])
        self.anonymous = organization_pb2_grpc.OrganizationServiceStub(connect(addr))
        self.orgs = organization_pb2_grpc.OrganizationServiceStub(admin)
        self.billing = billing_pb2_grpc.BillingServiceStub(admin)
        self.recorder = billing_pb2_grpc.BillingServiceStub(system)
        self.passed = 0

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        if not ok:
            raise Failed(f"{name}: {detail}")
        self.passed += 1
        print(f"ok   {name}")

    def expect_error(self, call, request, code: grpc.StatusCode):
        """Calls `call`, which must fail with `code`; returns the decoded details."""
        try:
            call(request, timeout=TIMEOUT)
        except grpc.RpcError as err:
            details = error_details(err)
            if details.code != code:
                raise Failed(f"expected {code.name}, got {details.code.name}: {details.message}")
            return details
        raise Failed(f"expected {code.name}, the call succeeded")

    def run(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        org = self.orgs.CreateOrganization(
            organization_pb2.CreateOrganizationRequest(
                request_id=str(uuid.uuid4()),
                organization=organization_pb2.Organization(
                    name=f"Python Smoke {suffix}",
                    contact_email="smoke@example.com",
                    billing_rate_per_agent=common_pb2.Money(amount="99.00"),
                ),
            ),
            timeout=TIMEOUT,
        ).organization
        self.check("create organization", org.id.startswith("org_"), org)

        found = False
        page_token = ""
        for _ in range(20):  # bounded paging
            page = self.orgs.ListOrganizations(
                organization_pb2.ListOrganizationsRequest(page_size=500, page_token=page_token),
                timeout=TIMEOUT,
            )
            found = found or any(o.id == org.id for o in page.organizations)
            page_token = page.next_page_token
            if found or not page_token:
                break
        self.check("list organizations finds it", found, org.id)

        agent = self.orgs.RegisterAgent(
            organization_pb2.RegisterAgentRequest(
                request_id=str(uuid.uuid4()),
                organization_id=org.id,
                agent=organization_pb2.Agent(name="Smoke agent"),
            ),
            timeout=TIMEOUT,
        ).agent
        self.check("register agent", agent.id.startswith("agt_"), agent)

        occurred_at = timestamp_pb2.Timestamp()
        occurred_at.GetCurrentTime()
        record = billing_pb2.RecordUsageRequest(
            organization_id=org.id,
            event=billing_pb2.UsageEvent(
                event_id=f"evt-{suffix}",
                agent_id=agent.id,
                metric=common_pb2.USAGE_METRIC_TOKENS,
                quantity=QUANTITY,
                cost=common_pb2.Money(amount=COST),
                occurred_at=occurred_at,
                dimensions={"channel": "webchat"},
            ),
        )
        result = self.recorder.RecordUsage(record, timeout=TIMEOUT).result
        self.check(
            "record usage (SYSTEM)",
            result.status == billing_pb2.USAGE_EVENT_STATUS_ACCEPTED,
            result,
        )
        again = self.recorder.RecordUsage(record, timeout=TIMEOUT).result
        self.check(
            "record usage again is DUPLICATE",
            again.status == billing_pb2.USAGE_EVENT_STATUS_DUPLICATE,
            again,
        )

        summary = self.billing.GetBillingSummary(
            billing_pb2.GetBillingSummaryRequest(organization_id=org.id), timeout=TIMEOUT
        )
        self.check(
            "billing summary counts the usage",
            summary.total.tokens == QUANTITY
            and Decimal(summary.total.cost.amount) == Decimal(COST),
            summary,
        )

        usage = self.billing.GetUsage(
            billing_pb2.GetUsageRequest(organization_id=org.id), timeout=TIMEOUT
        )
        tokens = [q.current for q in usage.quotas if q.name == "tokens"]
        self.check("usage quota counts the tokens", tokens == [QUANTITY], usage)

        missing = self.expect_error(
            self.orgs.GetOrganization,
            organization_pb2.GetOrganizationRequest(organization_id=f"no-such-org-{suffix}"),
            grpc.StatusCode.NOT_FOUND,
        )
        self.check(
            "unknown organization: ErrorInfo NOT_FOUND",
            missing.reason == "NOT_FOUND" and missing.error_info.domain == "tenantry",
            missing,
        )

        invalid = self.expect_error(
            self.orgs.CreateOrganization,
            organization_pb2.CreateOrganizationRequest(
                request_id=str(uuid.uuid4()),
                organization=organization_pb2.Organization(
                    name="", contact_email="not-an-email"
                ),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        fields = {field for field, _ in invalid.field_violations}
        self.check(
            "invalid organization: INVALID_ARGUMENT with field violations",
            invalid.reason == "INVALID_ARGUMENT"
            and {"organization.name", "organization.contact_email"} <= fields,
            invalid,
        )

        anonymous = self.expect_error(
            self.anonymous.GetOrganization,
            organization_pb2.GetOrganizationRequest(organization_id=org.id),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        self.check(
            "no credentials: ErrorInfo UNAUTHENTICATED",
            anonymous.reason == "UNAUTHENTICATED",
            anonymous,
        )


def main() -> int:
    smoke = Smoke()
    failed = 0
    try:
        smoke.run()
    except (Failed, grpc.RpcError) as err:
        failed = 1
        if isinstance(err, grpc.RpcError):
            details = error_details(err)
            err = f"{details.code.name} {details.reason}: {details.message}"
        print(f"FAIL {err}")
    print(f"python: {smoke.passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
