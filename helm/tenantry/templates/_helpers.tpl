{{/* Chart name, truncated to a DNS label. */}}
{{- define "tenantry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it is in it. */}}
{{- define "tenantry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tenantry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tenantry.labels" -}}
helm.sh/chart: {{ include "tenantry.chart" . }}
app.kubernetes.io/name: {{ include "tenantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tenantry
{{- end }}

{{/* Selector of the server pods (the migration Job's pods have another component). */}}
{{- define "tenantry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "tenantry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tenantry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tenantry.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret holding DATABASE_URL, TENANTRY_JWT_SECRET, Stripe and SMTP keys. */}}
{{- define "tenantry.secretName" -}}
{{- default (include "tenantry.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "tenantry.postgres" -}}
{{- if eq .Values.database.mode "postgres" }}true{{ end }}
{{- end }}

{{/* Whether the migration hook Job runs (PostgreSQL mode only: SQLite's RWO volume
belongs to the one server pod, which migrates at start). */}}
{{- define "tenantry.migrationJob" -}}
{{- if and (include "tenantry.postgres" .) .Values.migrations.job.enabled }}true{{ end }}
{{- end }}

{{/* Whether tokens are verified with public keys (then no HS256 secret is needed). */}}
{{- define "tenantry.publicKeyAuth" -}}
{{- if or .Values.auth.publicKeys .Values.auth.jwks }}true{{ end }}
{{- end }}

{{/* Whether the files ConfigMap (catalogue, public keys, JWKS) has anything. */}}
{{- define "tenantry.hasFiles" -}}
{{- if or .Values.catalogue.content (include "tenantry.publicKeyAuth" .) }}true{{ end }}
{{- end }}

{{- define "tenantry.catalogueFile" -}}
catalogue.{{ .Values.catalogue.format }}
{{- end }}

{{/* Where the files ConfigMap is mounted. */}}
{{- define "tenantry.filesDir" -}}
/etc/tenantry
{{- end }}

{{/* Non-secret settings: values key → environment variable of `tenantry serve`. */}}
{{- define "tenantry.configEnvNames" -}}
logFormat: TENANTRY_LOG_FORMAT
drainSeconds: TENANTRY_DRAIN_SECONDS
closedSignup: TENANTRY_CLOSED_SIGNUP
invitationTtlHours: TENANTRY_INVITATION_TTL_HOURS
publicRatePerMinute: TENANTRY_PUBLIC_RATE_PER_MINUTE
paymentGateway: TENANTRY_PAYMENT_GATEWAY
stripeApiBase: STRIPE_API_BASE
creditOverdraft: TENANTRY_CREDIT_OVERDRAFT
invoicePaymentTermsDays: TENANTRY_INVOICE_PAYMENT_TERMS_DAYS
subscriptionGraceDays: TENANTRY_SUBSCRIPTION_GRACE_DAYS
billingCycleIntervalSeconds: TENANTRY_BILLING_CYCLE_INTERVAL_SECONDS
eventsPollMs: TENANTRY_EVENTS_POLL_MS
webhookMaxAttempts: TENANTRY_WEBHOOK_MAX_ATTEMPTS
webhookRetryBaseMs: TENANTRY_WEBHOOK_RETRY_BASE_MS
webhookTimeoutSeconds: TENANTRY_WEBHOOK_TIMEOUT_SECONDS
smtpFrom: TENANTRY_SMTP_FROM
tenantTransferTtlDays: TENANTRY_TENANT_TRANSFER_TTL_DAYS
maxMessageBytes: TENANTRY_MAX_MESSAGE_BYTES
requestTimeoutSeconds: TENANTRY_REQUEST_TIMEOUT_SECONDS
maxConcurrentRequests: TENANTRY_MAX_CONCURRENT_REQUESTS
maxConcurrentStreams: TENANTRY_MAX_CONCURRENT_STREAMS
rustLog: RUST_LOG
{{- end }}

{{/* Pod-level settings shared by the server and the migration Job. */}}
{{- define "tenantry.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Refuses value combinations that cannot work, with a message that says why. */}}
{{- define "tenantry.validate" -}}
{{- if include "tenantry.postgres" . }}
{{- if not .Values.secret.existingSecret }}
{{- $url := required "database.mode=postgres needs secret.databaseUrl (postgres://…) or secret.existingSecret with a DATABASE_URL key" .Values.secret.databaseUrl }}
{{- if not (or (hasPrefix "postgres://" $url) (hasPrefix "postgresql://" $url)) }}
{{- fail "secret.databaseUrl must start with postgres:// or postgresql:// in database.mode=postgres" }}
{{- end }}
{{- end }}
{{- else }}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail "database.mode=sqlite runs exactly one replica (replicaCount: 1): the database file is on a ReadWriteOnce volume; use database.mode=postgres to scale out" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling needs database.mode=postgres: SQLite mode runs exactly one replica" }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (include "tenantry.postgres" .) }}
{{- if and (ne (toString .Values.podDisruptionBudget.minAvailable) "") (ne (toString .Values.podDisruptionBudget.maxUnavailable) "") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to \"\")" }}
{{- end }}
{{- if and (eq (toString .Values.podDisruptionBudget.minAvailable) "") (eq (toString .Values.podDisruptionBudget.maxUnavailable) "") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable" }}
{{- end }}
{{- end }}
{{- $drain := 2 }}
{{- if hasKey .Values.config "drainSeconds" }}{{ $drain = int .Values.config.drainSeconds }}{{ end }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.drainSeconds (%d): the pod would be killed while draining" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
