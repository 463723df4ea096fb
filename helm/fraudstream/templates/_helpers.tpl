{{- define "fraudstream.fullname" -}}
{{- printf "%s-fraudstream" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fraudstream.selectorLabels" -}}
app.kubernetes.io/name: fraudstream
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fraudstream.labels" -}}
{{ include "fraudstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels and selector of one component: (dict "root" $ "component" "scoring"). */}}
{{- define "fraudstream.componentLabels" -}}
{{ include "fraudstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
{{- define "fraudstream.componentSelector" -}}
{{ include "fraudstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fraudstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "fraudstream.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "fraudstream.secretName" -}}
{{ default (printf "%s-secrets" .Release.Name) .Values.existingSecret }}
{{- end -}}

{{/* The settings as FRAUDSTREAM_* variables, empty values left out (application defaults). */}}
{{- define "fraudstream.env" -}}
{{- range $key, $value := . }}
{{- if ne (toString $value) "" }}
FRAUDSTREAM_{{ upper $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* What every container of the chart gets: settings, secrets, a non-root context. */}}
{{- define "fraudstream.containerCommon" -}}
image: {{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: FRAUDSTREAM_STATE_DIR  # a writable volume: the root file system is read-only
    value: {{ default "/var/lib/fraudstream" .Values.config.state_dir | quote }}
envFrom:
  - configMapRef:
      name: {{ .Release.Name }}-config
  - secretRef:
      name: {{ include "fraudstream.secretName" . }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
