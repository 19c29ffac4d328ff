// Creates an organization and prints it.
//
//   clients/generate typescript
//   cd clients/typescript && TENANTRY_TOKEN=... node dist/example.js "Acme Corp"
//
// Environment: TENANTRY_TOKEN (a bearer token, e.g. from `tenantry token --role
// ROOT_ADMIN --org internal`), TENANTRY_ADDR (default localhost:50051).

import { randomUUID } from "node:crypto";
import { CreateOrganizationRequest, Organization, OrganizationServiceClient } from "./gen/tenantry/v1/organization";
import { call, connection, errorDetails, isServiceError } from "./tenantry";

async function main(): Promise<number> {
  const token = process.env.TENANTRY_TOKEN;
  if (!token) {
    console.error("set TENANTRY_TOKEN");
    return 2;
  }
  const name = process.argv[2] ?? "Acme Corp";
  const orgs = new OrganizationServiceClient(
    process.env.TENANTRY_ADDR ?? "localhost:50051",
    ...connection({ token }),
  );
  try {
    const { organization } = await call(
      orgs.createOrganization.bind(orgs),
      CreateOrganizationRequest.fromPartial({
        requestId: randomUUID(),
        organization: { name, contactEmail: "ops@example.com", billingRatePerAgent: { amount: "99.00" } },
      }),
    );
    console.log(JSON.stringify(Organization.toJSON(organization!), null, 2));
    return 0;
  } catch (err) {
    if (!isServiceError(err)) throw err;
    const details = errorDetails(err);
    console.error(`${details.code} ${details.errorInfo?.reason ?? ""}: ${details.message}`);
    for (const v of details.fieldViolations) console.error(`  ${v.field}: ${v.description}`);
    return 1;
  } finally {
    orgs.close();
  }
}

main().then((code) => process.exit(code));
