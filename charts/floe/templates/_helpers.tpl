{{/*
The chart name, or nameOverride.
*/}}
{{- define "floe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, or "<release>-<name>" (just the release name when it already
contains the name), truncated to 63 characters (the DNS label limit). Suffixed names
("-backfill") are built from it and truncated again.
*/}}
{{- define "floe.fullname" -}}
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
Names of the suffixed resources, kept within 63 characters.
*/}}
{{- define "floe.metricsServiceName" -}}
{{- printf "%s-metrics" (include "floe.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- define "floe.backfillName" -}}
{{- printf "%s-backfill" (include "floe.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
"<chart>-<version>", for the helm.sh/chart label.
*/}}
{{- define "floe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "floe.labels" -}}
helm.sh/chart: {{ include "floe.chart" . }}
{{ include "floe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: floe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the Deployment's pods (the Job's pods add component=backfill).
*/}}
{{- define "floe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "floe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "floe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "floe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "floe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Where the config file is mounted, and its path (the --config argument).
*/}}
{{- define "floe.configDir" -}}
/etc/floe
{{- end }}
{{- define "floe.configPath" -}}
{{ include "floe.configDir" . }}/connector.toml
{{- end }}

{{/*
Refuses a config whose [metrics] listen port differs from metrics.port: the probes, the
Service and the ServiceMonitor use metrics.port. (The chart also sets FLOE_METRICS__LISTEN, so
this only catches a config that says something else than what runs.)
*/}}
{{- define "floe.validateConfig" -}}
{{- if and .Values.secret.keys (not .Values.secret.existingSecret) }}
{{- fail "secret.keys picks keys of secret.existingSecret, which is not set" }}
{{- end }}
{{- if not (kindIs "string" .Values.config) }}
{{- fail "config must be the connector's TOML as a string (config: |)" }}
{{- end }}
{{- $listen := regexFind "(?m)^[ \\t]*listen[ \\t]*=[ \\t]*[\"'][^\"']*[\"']" .Values.config }}
{{- if $listen }}
{{- $port := regexFind "[0-9]+[\"']$" $listen | trimSuffix "\"" | trimSuffix "'" }}
{{- if ne $port (toString .Values.metrics.port) }}
{{- fail (printf "config: [metrics] %s does not match metrics.port %v (the container port the probes and the Service use)" $listen .Values.metrics.port) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of the Floe container (Deployment and backfill Job): logging, the metrics
listener, secrets picked key by key, then extraEnv.
*/}}
{{- define "floe.env" -}}
- name: FLOE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: FLOE_METRICS__ENABLED
  value: "true"
- name: FLOE_METRICS__LISTEN
  value: {{ printf "0.0.0.0:%v" .Values.metrics.port | quote }}
{{- if and .Values.secret.existingSecret .Values.secret.keys }}
{{- range $env, $key := .Values.secret.keys }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secret.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
envFrom of the Floe container: the whole existing Secret (when no keys are picked), then
envFrom from values.
*/}}
{{- define "floe.envFrom" -}}
{{- if and .Values.secret.existingSecret (not .Values.secret.keys) }}
- secretRef:
    name: {{ .Values.secret.existingSecret }}
{{- end }}
{{- with .Values.envFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the Floe container.
*/}}
{{- define "floe.volumeMounts" -}}
- name: config
  mountPath: {{ include "floe.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: workdir
  mountPath: /var/lib/floe
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes of the pods.
*/}}
{{- define "floe.volumes" -}}
- name: config
  configMap:
    name: {{ include "floe.fullname" . }}
    items:
      - key: connector.toml
        path: connector.toml
- name: tmp
  emptyDir:
    {{- with .Values.scratch.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
- name: workdir
  emptyDir:
    {{- with .Values.scratch.workdirSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by the Deployment and the Job.
*/}}
{{- define "floe.podCommon" -}}
serviceAccountName: {{ include "floe.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
