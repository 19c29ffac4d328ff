"""Creates an organization and prints it.

    clients/generate python
    TENANTRY_TOKEN=... clients/python/.venv/bin/python clients/python/example.py "Acme Corp"

Environment: TENANTRY_TOKEN (a bearer token, e.g. from `tenantry token --role
ROOT_ADMIN --org internal`), TENANTRY_ADDR (default localhost:50051).
"""

import os
import sys
import uuid

import grpc
from google.protobuf import json_format

from tenantry.v1 import common_pb2, organization_pb2, organization_pb2_grpc
from tenantry_client import connect, error_details


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "Acme Corp"
    channel = connect(
        os.environ.get("TENANTRY_ADDR", "localhost:50051"),
        token=os.environ["TENANTRY_TOKEN"],
    )
    orgs = organization_pb2_grpc.OrganizationServiceStub(channel)
    request = organization_pb2.CreateOrganizationRequest(
        request_id=str(uuid.uuid4()),
        organization=organization_pb2.Organization(
            name=name,
            contact_email="ops@example.com",
            billing_rate_per_agent=common_pb2.Money(amount="99.00"),
        ),
    )
    try:
        created = orgs.CreateOrganization(request, timeout=10).organization
    except grpc.RpcError as err:
        details = error_details(err)
        print(f"{details.code.name} {details.reason}: {details.message}", file=sys.stderr)
        for field, description in details.field_violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 1
    print(json_format.MessageToJson(created))
    return 0


if __name__ == "__main__":
    sys.exit(main())
