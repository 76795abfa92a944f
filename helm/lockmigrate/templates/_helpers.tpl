{{/*
Named templates of the lockmigrate chart.

Public, for application charts (see README.md):
  lockmigrate.initContainer  the lockmigrate init container, as a list item
  lockmigrate.volumes        the volumes it needs, as list items (may be empty)
Both take the lockmigrate chart's context: `.Subcharts.lockmigrate` from a
parent chart that depends on this one, `.` inside this chart.
*/}}

{{/*
Expand the name of the chart.
*/}}
{{- define "lockmigrate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "lockmigrate.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "lockmigrate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "lockmigrate.labels" -}}
helm.sh/chart: {{ include "lockmigrate.chart" . }}
{{ include "lockmigrate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "lockmigrate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "lockmigrate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockmigrate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "lockmigrate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lockmigrate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, or the chart's appVersion.
*/}}
{{- define "lockmigrate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
The image reference: repository:tag, plus @digest when a digest pins it.
*/}}
{{- define "lockmigrate.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (include "lockmigrate.imageTag" .) }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
lockmigrate.hookWeight: job.hookWeight as a quoted string; with "offset"
added (an integer) when given. Context: dict "root" . "offset" N.
*/}}
{{- define "lockmigrate.hookWeight" -}}
{{- $w := .root.Values.job.hookWeight | toString | atoi }}
{{- add $w (.offset | default 0) | toString | quote }}
{{- end }}

{{/*
lockmigrate.pushgatewayGrouping: pushgateway.grouping as k=v,k=v, keys sorted
so the rendering is stable.
*/}}
{{- define "lockmigrate.pushgatewayGrouping" -}}
{{- $g := .Values.pushgateway.grouping }}
{{- $pairs := list }}
{{- range $k := keys $g | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%v" $k (get $g $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
lockmigrate.literalEnv: env entries with literal values from a list of
(name value) pairs; a value that is empty or null is left out (0 is kept).
*/}}
{{- define "lockmigrate.literalEnv" -}}
{{- range $pair := . }}
{{- $raw := index $pair 1 }}
{{- if not (kindIs "invalid" $raw) }}
{{- with toString $raw }}
- name: {{ index $pair 0 }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
lockmigrate.env: the container's environment. Context: dict "root" <chart
context> "onLocked" skip|wait, and optionally "waitTimeout" (overrides
config.waitTimeout), "sharded" (true for the hook Job: LOCKMIGRATE_SHARDS
with tenants.shards; JOB_COMPLETION_INDEX comes from Kubernetes) and "phase"
(LOCKMIGRATE_PHASE; contract adds the rollout wait of contract.waitFor).
*/}}
{{- define "lockmigrate.env" -}}
{{- $v := .root.Values }}
{{- $db := $v.database }}
- name: LOCKMIGRATE_ON_LOCKED
  value: {{ .onLocked | quote }}
{{- with .phase }}
# expand: before the rollout (pre-upgrade Job, init containers); contract:
# after it (the post-install/post-upgrade Job).
- name: LOCKMIGRATE_PHASE
  value: {{ . | quote }}
{{- end }}
{{- if eq (toString .phase) "contract" }}
{{- with $v.contract.waitFor }}
- name: LOCKMIGRATE_CONTRACT_WAIT_FOR
  value: {{ join "," . | quote }}
{{- end }}
{{- with $v.contract.waitTimeout }}
- name: LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT
  value: {{ . | quote }}
{{- end }}
{{- end }}
# Recorded as applied_by and sent as application_name (lockmigrate/<pod>).
- name: POD_NAME
  valueFrom:
    fieldRef:
      apiVersion: v1
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      apiVersion: v1
      fieldPath: metadata.namespace
{{- if eq $db.mode "url" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required with database.mode=url: the name of an existing Secret holding the database URL (the chart does not create it, see its README)" $db.existingSecret | quote }}
      key: {{ required "database.urlKey is required with database.mode=url" $db.urlKey | quote }}
{{- else if eq $db.mode "urlFile" }}
{{- $_ := required "database.existingSecret is required with database.mode=urlFile: the name of an existing Secret holding the database URL (the chart does not create it, see its README)" $db.existingSecret }}
- name: DATABASE_URL_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" $db.urlFileMountPath) (required "database.urlKey is required with database.mode=urlFile" $db.urlKey) | quote }}
{{- else if eq $db.mode "pg" }}
{{- $_ := required "database.pg.host is required with database.mode=pg" $db.pg.host }}
{{- include "lockmigrate.literalEnv" (list
      (list "PGHOST" $db.pg.host)
      (list "PGPORT" $db.pg.port)
      (list "PGDATABASE" $db.pg.database)
      (list "PGUSER" $db.pg.user)
      (list "PGSSLMODE" $db.pg.sslmode)
      (list "PGCONNECT_TIMEOUT" $db.pg.connectTimeout)) }}
{{- if $db.existingSecret }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret | quote }}
      key: {{ required "database.passwordKey is required with database.mode=pg and database.existingSecret" $db.passwordKey | quote }}
{{- end }}
{{- else }}
{{- fail (printf "database.mode must be url, urlFile or pg, not %q" $db.mode) }}
{{- end }}
{{- $c := $v.config }}
{{- include "lockmigrate.literalEnv" (list
      (list "LOCKMIGRATE_WAIT_TIMEOUT" (.waitTimeout | default $c.waitTimeout))
      (list "LOCKMIGRATE_CONNECT_TIMEOUT" $c.connectTimeout)
      (list "LOCKMIGRATE_LOCK_KEY" $c.lockKey)
      (list "LOCKMIGRATE_SCHEMA" $c.schema)
      (list "LOCKMIGRATE_TABLE" $c.table)
      (list "LOCKMIGRATE_DIR" $c.dir)
      (list "LOCKMIGRATE_FORMAT" $c.format)
      (list "LOCKMIGRATE_TRANSACTION" $c.transaction)
      (list "LOCKMIGRATE_LOCK_TIMEOUT" $c.lockTimeout)
      (list "LOCKMIGRATE_LOCK_RETRIES" $c.lockRetries)
      (list "LOCKMIGRATE_STATEMENT_TIMEOUT" $c.statementTimeout)
      (list "LOCKMIGRATE_BACKFILL_SLEEP" $c.backfillSleep)
      (list "LOCKMIGRATE_BACKFILL_MAX_LAG" $c.backfillMaxLag)
      (list "LOCKMIGRATE_LOG_FORMAT" $c.logFormat)
      (list "LOCKMIGRATE_LOG_LEVEL" $c.logLevel)) }}
{{- if $c.allowOutOfOrder }}
- name: LOCKMIGRATE_ALLOW_OUT_OF_ORDER
  value: "true"
{{- end }}
{{- $t := $v.tenants }}
{{- if $t.query }}
- name: LOCKMIGRATE_TENANTS_QUERY
  value: {{ $t.query | quote }}
- name: LOCKMIGRATE_TENANT_CONCURRENCY
  value: {{ $t.concurrency | toString | quote }}
{{- if $t.failFast }}
- name: LOCKMIGRATE_TENANT_FAIL_FAST
  value: "true"
{{- end }}
{{- if and .sharded (gt (int $t.shards) 1) }}
- name: LOCKMIGRATE_SHARDS
  value: {{ $t.shards | toString | quote }}
{{- end }}
{{- else if gt (int $t.shards) 1 }}
{{- fail "tenants.shards above 1 requires tenants.query (shards split the tenants the query returns)" }}
{{- end }}
{{- $p := $v.pushgateway }}
{{- if $p.url }}
- name: LOCKMIGRATE_PUSHGATEWAY_URL
  value: {{ $p.url | quote }}
{{- with $p.job }}
- name: LOCKMIGRATE_PUSHGATEWAY_JOB
  value: {{ . | quote }}
{{- end }}
{{- with $p.timeout }}
- name: LOCKMIGRATE_PUSHGATEWAY_TIMEOUT
  value: {{ . | quote }}
{{- end }}
{{- with include "lockmigrate.pushgatewayGrouping" .root }}
- name: LOCKMIGRATE_PUSHGATEWAY_GROUPING
  value: {{ . | quote }}
{{- end }}
{{- with $p.username }}
- name: LOCKMIGRATE_PUSHGATEWAY_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $p.existingSecret }}
{{- $_ := required "pushgateway.username is required with pushgateway.existingSecret (basic auth)" $p.username }}
- name: LOCKMIGRATE_PUSHGATEWAY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $p.existingSecret | quote }}
      key: {{ required "pushgateway.passwordKey is required with pushgateway.existingSecret" $p.passwordKey | quote }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
lockmigrate.volumeMounts: the container's volume mounts (list items; may be
empty). Context: the chart context.
*/}}
{{- define "lockmigrate.volumeMounts" -}}
{{- if eq .Values.database.mode "urlFile" }}
- name: lockmigrate-database-url
  mountPath: {{ .Values.database.urlFileMountPath | quote }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
lockmigrate.volumes: the volumes the lockmigrate container mounts (list
items; may be empty). An application pod that includes the init container
must include these in its volumes. Context: the chart context.
*/}}
{{- define "lockmigrate.volumes" -}}
{{- if eq .Values.database.mode "urlFile" }}
- name: lockmigrate-database-url
  secret:
    secretName: {{ required "database.existingSecret is required with database.mode=urlFile" .Values.database.existingSecret | quote }}
    items:
      - key: {{ .Values.database.urlKey | quote }}
        path: {{ .Values.database.urlKey | quote }}
    # 0444: readable by the lockmigrate user whatever the pod's fsGroup.
    defaultMode: 292
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
lockmigrate.container: the lockmigrate container (a mapping, not a list
item). Context: dict "root" <chart context> "name" NAME "onLocked" skip|wait
and optionally "waitTimeout", "sharded" and "phase" (expand|contract).
The image's entrypoint runs `lockmigrate migrate`; no command or args.
*/}}
{{- define "lockmigrate.container" -}}
{{- $v := .root.Values -}}
name: {{ .name }}
image: {{ include "lockmigrate.image" .root | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
env:
  {{- include "lockmigrate.env" (dict "root" .root "onLocked" .onLocked "waitTimeout" .waitTimeout "sharded" .sharded "phase" .phase) | trim | nindent 2 }}
{{- with include "lockmigrate.volumeMounts" .root | trim }}
volumeMounts:
  {{- . | nindent 2 }}
{{- end }}
{{- with $v.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
# lockmigrate writes a one-line JSON summary to /dev/termination-log
# (kubectl describe pod shows it); the end of the log when it could not.
terminationMessagePath: /dev/termination-log
terminationMessagePolicy: FallbackToLogsOnError
{{- end }}

{{/*
lockmigrate.initContainer: the lockmigrate init container as a list item,
with initContainer.onLocked (default wait). From an application chart that
depends on this chart:

      initContainers:
        {{- include "lockmigrate.initContainer" .Subcharts.lockmigrate | nindent 8 }}
      volumes:
        {{- include "lockmigrate.volumes" .Subcharts.lockmigrate | nindent 8 }}
*/}}
{{- define "lockmigrate.initContainer" -}}
{{ include "lockmigrate.containerItem" (dict "root" . "name" .Values.initContainer.name "onLocked" .Values.initContainer.onLocked "phase" (include "lockmigrate.expandPhase" .)) }}
{{- end }}

{{/*
lockmigrate.expandPhase: the phase of the pre-upgrade Job and the init
containers: "expand" when the contract Job runs the contract files after
the rollout, else empty (LOCKMIGRATE_PHASE unset: every file, in order).
*/}}
{{- define "lockmigrate.expandPhase" -}}
{{- if and .Values.job.enabled .Values.contract.enabled }}expand{{ end }}
{{- end }}

{{/*
lockmigrate.contractServiceAccountName: the contract Job's ServiceAccount:
its own, allowed to read the workloads it waits for, when contract.waitFor
is set; else the pre-upgrade Job's.
*/}}
{{- define "lockmigrate.contractServiceAccountName" -}}
{{- if .Values.contract.waitFor }}
{{- default (printf "%s-contract" (include "lockmigrate.fullname" . | trunc 54 | trimSuffix "-")) .Values.contract.serviceAccountName }}
{{- else }}
{{- include "lockmigrate.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
lockmigrate.containerItem: lockmigrate.container as a list item.
*/}}
{{- define "lockmigrate.containerItem" -}}
- {{ include "lockmigrate.container" . | nindent 2 | trim }}
{{- end }}
