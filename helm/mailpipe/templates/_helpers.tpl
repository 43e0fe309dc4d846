{{/*
Names, labels and the per-role wiring shared by every template.
*/}}

{{- define "mailpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailpipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mailpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mailpipe.labels" -}}
helm.sh/chart: {{ include "mailpipe.chart" . }}
{{ include "mailpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailpipe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The roles, in a fixed order: values key -> role name (`mailpipe run --role`), the queue it consumes
(for KEDA), the environment variable its prefetch goes to, and whether it calls Microsoft Graph.
*/}}
{{- define "mailpipe.roleTable" -}}
ingest:
  role: ingest
  queue: mail.ingest
  prefetchEnv: MAILPIPE_INGEST_PREFETCH
  graph: false
scheduler:
  role: scheduler
  queue: ""
  prefetchEnv: ""
  graph: false
sendNoAttachments:
  role: send-no-attachments
  queue: mail.send.no-attachment
  prefetchEnv: MAILPIPE_SEND_NO_ATTACHMENTS_PREFETCH
  graph: true
sendAttachments:
  role: send-attachments
  queue: mail.send.attachment
  prefetchEnv: MAILPIPE_SEND_ATTACHMENTS_PREFETCH
  graph: true
backup:
  role: backup
  queue: mail.backup
  prefetchEnv: MAILPIPE_BACKUP_PREFETCH
  graph: true
{{- end -}}

{{- define "mailpipe.roleKeys" -}}
ingest scheduler sendNoAttachments sendAttachments backup
{{- end -}}

{{/* "<fullname>-<role>", e.g. mailpipe-send-no-attachments. Call with (dict "root" $ "role" "ingest"). */}}
{{- define "mailpipe.roleFullname" -}}
{{- printf "%s-%s" (include "mailpipe.fullname" .root) .role | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailpipe.roleSelectorLabels" -}}
{{ include "mailpipe.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "mailpipe.roleLabels" -}}
{{ include "mailpipe.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "mailpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mailpipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mailpipe.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
An environment value as a string. Helm reads numbers from YAML as float64 and would print 157286400
as 1.572864e+08, so whole numbers are printed as integers.
*/}}
{{- define "mailpipe.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* An IntOrString field: a number unquoted, a percentage quoted. */}}
{{- define "mailpipe.intOrString" -}}
{{- if kindIs "string" . -}}{{ . | quote }}{{- else -}}{{ include "mailpipe.envValue" . }}{{- end -}}
{{- end -}}

{{/* The pod securityContext: non-root, seccomp RuntimeDefault. */}}
{{- define "mailpipe.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurity }}
{{- if .setIds }}
runAsUser: {{ include "mailpipe.envValue" .runAsUser }}
runAsGroup: {{ include "mailpipe.envValue" .runAsGroup }}
fsGroup: {{ include "mailpipe.envValue" .fsGroup }}
{{- end }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container securityContext; deliberately not configurable. */}}
{{- define "mailpipe.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Database URL from its Secret (no file variant in the application). */}}
{{- define "mailpipe.databaseEnv" -}}
- name: MAILPIPE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.database.name }}
      key: {{ .Values.secrets.database.key }}
{{- end -}}

{{- define "mailpipe.amqpEnv" -}}
- name: MAILPIPE_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.amqp.name }}
      key: {{ .Values.secrets.amqp.key }}
{{- end -}}

{{/*
Graph credentials for the roles that call Graph: ids from the Secret, the client secret or
certificate as a file. Call with (dict "root" $ "secretName" <Secret name>).
*/}}
{{- define "mailpipe.graphEnv" -}}
{{- $graph := .root.Values.secrets.graph -}}
- name: MAILPIPE_GRAPH_TENANT_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $graph.tenantIdKey }}
- name: MAILPIPE_GRAPH_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $graph.clientIdKey }}
{{- if eq $graph.credential "certificate" }}
- name: MAILPIPE_GRAPH_CERTIFICATE_PATH
  value: /var/run/secrets/mailpipe/graph/certificate.pem
{{- else }}
- name: MAILPIPE_GRAPH_CLIENT_SECRET_FILE
  value: /var/run/secrets/mailpipe/graph/client-secret
{{- end }}
{{- end -}}

{{- define "mailpipe.graphVolume" -}}
{{- $graph := .root.Values.secrets.graph -}}
- name: graph-credential
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
{{- if eq $graph.credential "certificate" }}
      - key: {{ $graph.certificateKey }}
        path: certificate.pem
{{- else }}
      - key: {{ $graph.clientSecretKey }}
        path: client-secret
{{- end }}
{{- end -}}

{{- define "mailpipe.encryptionVolume" -}}
- name: encryption-keys
  secret:
    secretName: {{ .Values.secrets.encryptionKeys.name }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secrets.encryptionKeys.key }}
        path: keys
{{- end -}}

{{- /* The /tmp emptyDir; the argument is its size cap. */ -}}
{{- define "mailpipe.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end -}}
