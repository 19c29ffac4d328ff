// End-to-end smoke test of the generated TypeScript client against a running server.
//
// Run by clients/smoke. Environment: TENANTRY_ADDR (host:port), TENANTRY_TOKEN (a
// ROOT_ADMIN token), TENANTRY_SYSTEM_TOKEN (a SYSTEM token: RecordUsage is for internal
// services and API keys). Stops at the first failed check; exits 1 if any failed.

import { status as Code } from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import {
  BillingServiceClient,
  GetBillingSummaryRequest,
  GetUsageRequest,
  RecordUsageRequest,
  UsageEventStatus,
} from "./gen/tenantry/v1/billing";
import { UsageMetric } from "./gen/tenantry/v1/common";
import {
  CreateOrganizationRequest,
  GetOrganizationRequest,
  ListOrganizationsRequest,
  OrganizationServiceClient,
  RegisterAgentRequest,
} from "./gen/tenantry/v1/organization";
import { call, connection, ErrorDetails, errorDetails, isServiceError } from "./tenantry";

const QUANTITY = 1200;
const COST = "0.36";

class Failed extends Error {}

let passed = 0;

function check(name: string, ok: boolean, detail: unknown = ""): void {
  if (!ok) throw new Failed(`${name}: ${JSON.stringify(detail)}`);
  passed += 1;
  console.log(`ok   ${name}`);
}

/** Awaits a call that must fail with `code`; returns the decoded details. */
async function expectError(pending: Promise<unknown>, code: Code): Promise<ErrorDetails> {
  try {
    await pending;
  } catch (err) {
    if (!isServiceError(err)) throw err;
    const details = errorDetails(err);
    if (details.code !== code) {
      throw new Failed(`expected ${Code[code]}, got ${Code[details.code]}: ${details.message}`);
    }
    return details;
  }
  throw new Failed(`expected ${Code[code]}, the call succeeded`);
}

/** Compares decimal strings such as "0.36" and "0.360000". */
function sameAmount(a: string | undefined, b: string): boolean {
  const norm = (s: string) => s.replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  return a !== undefined && norm(a) === norm(b);
}

async function run(addr: string, token: string, systemToken: string): Promise<void> {
  const orgs = new OrganizationServiceClient(addr, ...connection({ token }));
  const anonymous = new OrganizationServiceClient(addr, ...connection({}));
  const billing = new BillingServiceClient(addr, ...connection({ token }));
  const recorder = new BillingServiceClient(addr, ...connection({ token: systemToken }));
  try {
    const suffix = randomUUID().slice(0, 8);
    const { organization: org } = await call(
      orgs.createOrganization.bind(orgs),
      CreateOrganizationRequest.fromPartial({
        requestId: randomUUID(),
        organization: {
          name: `TypeScript Smoke ${suffix}`,
          contactEmail: "smoke@example.com",
          billingRatePerAgent: { amount: "99.00" },
        },
      }),
    );
    check("create organization", !!org?.id.startsWith("org_"), org);
    const orgId = org!.id;

    let found = false;
    let pageToken = "";
    for (let i = 0; i < 20; i++) {
      const page = await call(
        orgs.listOrganizations.bind(orgs),
        ListOrganizationsRequest.fromPartial({ pageSize: 500, pageToken }),
      );
      found ||= page.organizations.some((o) => o.id === orgId);
      pageToken = page.nextPageToken;
      if (found || !pageToken) break;
    }
    check("list organizations finds it", found, orgId);

    const { agent } = await call(
      orgs.registerAgent.bind(orgs),
      RegisterAgentRequest.fromPartial({
        requestId: randomUUID(),
        organizationId: orgId,
        agent: { name: "Smoke agent" },
      }),
    );
    check("register agent", !!agent?.id.startsWith("agt_"), agent);

    const record = RecordUsageRequest.fromPartial({
      organizationId: orgId,
      event: {
        eventId: `evt-${suffix}`,
        agentId: agent!.id,
        metric: UsageMetric.USAGE_METRIC_TOKENS,
        quantity: QUANTITY,
        cost: { amount: COST },
        occurredAt: new Date(),
        dimensions: { channel: "webchat" },
      },
    });
    const first = await call(recorder.recordUsage.bind(recorder), record);
    check(
      "record usage (SYSTEM)",
      first.result?.status === UsageEventStatus.USAGE_EVENT_STATUS_ACCEPTED,
      first,
    );
    const again = await call(recorder.recordUsage.bind(recorder), record);
    check(
      "record usage again is DUPLICATE",
      again.result?.status === UsageEventStatus.USAGE_EVENT_STATUS_DUPLICATE,
      again,
    );

    const summary = await call(
      billing.getBillingSummary.bind(billing),
      GetBillingSummaryRequest.fromPartial({ organizationId: orgId }),
    );
    check(
      "billing summary counts the usage",
      summary.total?.tokens === QUANTITY && sameAmount(summary.total?.cost?.amount, COST),
      summary,
    );

    const usage = await call(billing.getUsage.bind(billing), GetUsageRequest.fromPartial({ organizationId: orgId }));
    const tokens = usage.quotas.filter((q) => q.name === "tokens").map((q) => q.current);
    check("usage quota counts the tokens", tokens.length === 1 && tokens[0] === QUANTITY, usage);

    const missing = await expectError(
      call(
        orgs.getOrganization.bind(orgs),
        GetOrganizationRequest.fromPartial({ organizationId: `no-such-org-${suffix}` }),
      ),
      Code.NOT_FOUND,
    );
    check(
      "unknown organization: ErrorInfo NOT_FOUND",
      missing.errorInfo?.reason === "NOT_FOUND" && missing.errorInfo?.domain === "tenantry",
      missing,
    );

    const invalid = await expectError(
      call(
        orgs.createOrganization.bind(orgs),
        CreateOrganizationRequest.fromPartial({
          requestId: randomUUID(),
          organization: { name: "", contactEmail: "not-an-email" },
        }),
      ),
      Code.INVALID_ARGUMENT,
    );
    const fields = new Set(invalid.fieldViolations.map((v) => v.field));
    check(
      "invalid organization: INVALID_ARGUMENT with field violations",
      invalid.errorInfo?.reason === "INVALID_ARGUMENT" &&
        fields.has("organization.name") &&
        fields.has("organization.contact_email"),
      invalid,
    );

    const unauthenticated = await expectError(
      call(anonymous.getOrganization.bind(anonymous), GetOrganizationRequest.fromPartial({ organizationId: orgId })),
      Code.UNAUTHENTICATED,
    );
    check(
      "no credentials: ErrorInfo UNAUTHENTICATED",
      unauthenticated.errorInfo?.reason === "UNAUTHENTICATED",
      unauthenticated,
    );
  } finally {
    for (const client of [orgs, anonymous, billing, recorder]) client.close();
  }
}

async function main(): Promise<number> {
  const env = (name: string): string => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set`);
    return value;
  };
  let failed = 0;
  try {
    await run(env("TENANTRY_ADDR"), env("TENANTRY_TOKEN"), env("TENANTRY_SYSTEM_TOKEN"));
  } catch (err) {
    failed = 1;
    if (isServiceError(err)) {
      const d = errorDetails(err);
      console.log(`FAIL ${Code[d.code]} ${d.errorInfo?.reason ?? ""}: ${d.message}`);
    } else {
      console.log(`FAIL ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  console.log(`typescript: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code));
