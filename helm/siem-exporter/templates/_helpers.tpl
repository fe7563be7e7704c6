{{/*
Names and labels. Tenant-scoped templates take (dict "root" $ "tenant" $tenant) so that
one definition serves the StatefulSets, the sidecar snippet and the subchart include.
*/}}
{{- define "siem-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "siem-exporter.fullname" -}}
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

{{- define "siem-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "siem-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "siem-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "siem-exporter.labels" -}}
helm.sh/chart: {{ include "siem-exporter.chart" . }}
{{ include "siem-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: siem-exporter
{{- end }}

{{/* The name of a tenant's ConfigMap, Secret, StatefulSet and PVC. */}}
{{- define "siem-exporter.tenantFullname" -}}
{{- printf "%s-%s" (include "siem-exporter.fullname" .root) .tenant.name | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* Selector of one tenant's pods: the release's labels plus the tenant. */}}
{{- define "siem-exporter.tenantSelectorLabels" -}}
{{ include "siem-exporter.selectorLabels" .root }}
app.kubernetes.io/component: exporter
siem-exporter.io/tenant: {{ .tenant.name }}
{{- end }}

{{- define "siem-exporter.tenantLabels" -}}
{{ include "siem-exporter.labels" .root }}
app.kubernetes.io/component: exporter
siem-exporter.io/tenant: {{ .tenant.name }}
{{- end }}

{{- define "siem-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "siem-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "siem-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A tenant's auth: the top-level `auth` with the tenant's overrides, as YAML. */}}
{{- define "siem-exporter.tenantAuth" -}}
{{- $auth := mustMergeOverwrite (deepCopy .root.Values.auth) (deepCopy (.tenant.auth | default dict)) }}
{{- if not (has $auth.method (list "clientSecret" "certificate" "workloadIdentity")) }}
{{- fail (printf "tenants[%s].auth.method: expected clientSecret, certificate or workloadIdentity" .tenant.name) }}
{{- end }}
{{- toYaml $auth }}
{{- end }}

{{/* The Secret a tenant's credential file comes from; empty with workload identity. */}}
{{- define "siem-exporter.tenantSecretName" -}}
{{- $auth := include "siem-exporter.tenantAuth" . | fromYaml }}
{{- if ne $auth.method "workloadIdentity" }}
{{- default (include "siem-exporter.tenantFullname" .) $auth.existingSecret }}
{{- end }}
{{- end }}

{{- define "siem-exporter.configDir" -}}/etc/siem-exporter{{- end }}
{{- define "siem-exporter.credentialsDir" -}}/var/run/secrets/siem-exporter{{- end }}
{{- define "siem-exporter.stateDir" -}}/var/lib/siem-exporter{{- end }}

{{/*
The exporter's config file for one tenant, exactly the CONTRACT.md keys: the shared
`config`, the tenant's overrides, its identity, and the paths the chart mounts.
Secrets appear only as file paths.
*/}}
{{- define "siem-exporter.config" -}}
{{- $auth := include "siem-exporter.tenantAuth" . | fromYaml }}
{{- $cfg := mustMergeOverwrite (deepCopy .root.Values.config) (deepCopy (.tenant.config | default dict)) }}
{{- with .tenant.tenantId }}
{{- $_ := set $cfg "tenant_id" . }}
{{- end }}
{{- with .tenant.clientId }}
{{- $_ := set $cfg "client_id" . }}
{{- end }}
{{- $credentials := include "siem-exporter.credentialsDir" . }}
{{- if eq $auth.method "clientSecret" }}
{{- $_ := set $cfg "client_secret_file" (printf "%s/client-secret" $credentials) }}
{{- else if eq $auth.method "certificate" }}
{{- $thumbprint := required (printf "tenant %s: auth.certificate.thumbprint is required with method certificate" .tenant.name) $auth.certificate.thumbprint }}
{{- $_ := set $cfg "certificate" (dict "private_key_file" (printf "%s/private-key.pem" $credentials) "thumbprint" $thumbprint) }}
{{- else }}
{{- $_ := set $cfg "workload_identity" true }}
{{- end }}
{{- $_ := set $cfg "state" (dict "path" (printf "%s/state.db" (include "siem-exporter.stateDir" .))) }}
{{- $_ := set $cfg "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .root.Values.metrics.port))) }}
{{- if .root.Values.verify.enabled }}
{{- $_ := set $cfg.metrics "verify_file" (include "siem-exporter.verifyFile" .) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The exporter container for one tenant; shared by the StatefulSet and the sidecar. */}}
{{- define "siem-exporter.container" -}}
{{- $root := .root }}
{{- $secretName := include "siem-exporter.tenantSecretName" . -}}
- name: {{ printf "siem-exporter-%s" .tenant.name | trunc 63 | trimSuffix "-" }}
  image: {{ include "siem-exporter.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    - run
    - --config
    - {{ include "siem-exporter.configDir" . }}/config.yaml
  ports:
    - name: siem-metrics
      containerPort: {{ $root.Values.metrics.port }}
      protocol: TCP
  {{- with $root.Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: siem-metrics
    {{- toYaml $root.Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: siem-metrics
    {{- toYaml $root.Values.readinessProbe | nindent 4 }}
  resources:
    {{- toYaml $root.Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: siem-exporter-config
      mountPath: {{ include "siem-exporter.configDir" . }}
      readOnly: true
    - name: siem-exporter-state
      mountPath: {{ include "siem-exporter.stateDir" . }}
    - name: siem-exporter-tmp
      mountPath: /tmp
    {{- if $secretName }}
    - name: siem-exporter-credentials
      mountPath: {{ include "siem-exporter.credentialsDir" . }}
      readOnly: true
    {{- end }}
    {{- with $root.Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The volumes the container mounts. With (dict ... "claimState" false) the state volume is
left out, because a StatefulSet provides it from its volumeClaimTemplates.
*/}}
{{- define "siem-exporter.volumes" -}}
{{- $root := .root }}
{{- $auth := include "siem-exporter.tenantAuth" . | fromYaml }}
{{- $secretName := include "siem-exporter.tenantSecretName" . -}}
- name: siem-exporter-config
  configMap:
    name: {{ include "siem-exporter.tenantFullname" . }}
- name: siem-exporter-tmp
  emptyDir:
    sizeLimit: {{ $root.Values.tmpSizeLimit }}
{{- if $secretName }}
- name: siem-exporter-credentials
  secret:
    secretName: {{ $secretName }}
    {{- /* World-readable inside the volume so the fixed UID can read it even in a
    host pod without fsGroup; no other container mounts this volume. */}}
    defaultMode: 0444
    items:
      {{- if eq $auth.method "clientSecret" }}
      - key: {{ $auth.secretKeys.clientSecret }}
        path: client-secret
      {{- else }}
      - key: {{ $auth.secretKeys.privateKey }}
        path: private-key.pem
      {{- end }}
{{- end }}
{{- if .claimState }}
- name: siem-exporter-state
  {{- if $root.Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-state" (include "siem-exporter.tenantFullname" .)) $root.Values.persistence.existingClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- with $root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Whether any tenant uses Azure Workload Identity ("true" or empty). */}}
{{- define "siem-exporter.anyWorkloadIdentity" -}}
{{- range .Values.tenants }}
{{- $auth := include "siem-exporter.tenantAuth" (dict "root" $ "tenant" .) | fromYaml }}
{{- if eq $auth.method "workloadIdentity" }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Sidecar entry points for a chart that has this one as a dependency:
  containers: {{ include "siem-exporter.sidecar.containers" (index .Subcharts "siem-exporter") | nindent 8 }}
  volumes:    {{ include "siem-exporter.sidecar.volumes" (index .Subcharts "siem-exporter") | nindent 8 }}
*/}}
{{- define "siem-exporter.sidecar.tenant" -}}
{{- if ne (len .Values.tenants) 1 }}
{{- fail "sidecar mode takes exactly one entry in tenants" }}
{{- end }}
{{- toYaml (first .Values.tenants) }}
{{- end }}

{{- define "siem-exporter.sidecar.containers" -}}
{{- $tenant := include "siem-exporter.sidecar.tenant" . | fromYaml }}
{{- include "siem-exporter.container" (dict "root" . "tenant" $tenant) }}
{{- end }}

{{- define "siem-exporter.sidecar.volumes" -}}
{{- $tenant := include "siem-exporter.sidecar.tenant" . | fromYaml }}
{{- include "siem-exporter.volumes" (dict "root" . "tenant" $tenant "claimState" true) }}
{{- end }}

{{/* The job label every scrape target gets, whatever the object's name. */}}
{{- define "siem-exporter.scrapeRelabelings" -}}
- action: replace
  targetLabel: job
  replacement: {{ .Values.monitoring.jobLabel }}
- action: replace
  sourceLabels:
    - __meta_kubernetes_pod_label_siem_exporter_io_tenant
  targetLabel: tenant
{{- end }}

{{/* The verify CronJob's pods: the release's labels, the tenant, and a component of their
own, so that no selector of the collector matches them. */}}
{{- define "siem-exporter.verifyLabels" -}}
{{ include "siem-exporter.labels" .root }}
app.kubernetes.io/component: verify
siem-exporter.io/tenant: {{ .tenant.name }}
{{- end }}

{{- define "siem-exporter.verifyFile" -}}
{{ include "siem-exporter.stateDir" . }}/verify.prom
{{- end }}

{{/*
The verify job's shell line: the UTC day `verify.daysAgo` days back (1: yesterday), from
its midnight to the next, computed once from one reading of the clock (GNU date, as in
the Debian-based image), then exec, so the job's exit status is verify's. `--yes`: nobody
is there to confirm a long audit; activeDeadlineSeconds bounds it. The schema lets
budgetShare and siemExport hold no character the shell would read.
*/}}
{{- define "siem-exporter.verifyScript" -}}
{{- $v := .root.Values.verify -}}
today=$(date -u +%F); from=$(date -u -d "$today -{{ int $v.daysAgo }} days" +%F); to=$(date -u -d "$today -{{ sub (int $v.daysAgo) 1 }} days" +%F); exec siem-exporter verify --config {{ include "siem-exporter.configDir" . }}/config.yaml --from "${from}T00:00:00Z" --to "${to}T00:00:00Z" --yes --metrics-file {{ include "siem-exporter.verifyFile" . }}
{{- with $v.budgetShare }} --budget-share {{ . }}{{ end }}
{{- with $v.siemExport }} --siem-export {{ . }}{{ end }}
{{- end }}
