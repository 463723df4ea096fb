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

{{/* The secrets as files named by setting, empty ones left out; the scoring token is made
     once (random, kept across upgrades) unless given: the scoring API never runs open. */}}
{{- define "fraudstream.secretFiles" -}}
{{- $previous := lookup "v1" "Secret" .Release.Namespace (printf "%s-secrets" .Release.Name) }}
{{- $kept := "" }}
{{- if and $previous $previous.data $previous.data.scoring_token }}
{{- $kept = $previous.data.scoring_token | b64dec }}
{{- end }}
{{- $token := .Values.secrets.scoring_token | default $kept | default (randAlphaNum 48) }}
{{- range $key, $value := merge (dict "scoring_token" $token) .Values.secrets }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* What every container of the chart gets: settings, secrets as files (never in the
     environment, which a process hands to all it starts), a non-root context. */}}
{{- define "fraudstream.containerCommon" -}}
image: {{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: FRAUDSTREAM_STATE_DIR  # a writable volume: the root file system is read-only
    value: {{ default "/var/lib/fraudstream" .Values.config.state_dir | quote }}
envFrom:
  - configMapRef:
      name: {{ .Release.Name }}-config
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* The secrets volume and its mount at the secrets_dir setting. */}}
{{- define "fraudstream.secretsVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "fraudstream.secretName" . }}
    defaultMode: 0400
{{- end -}}
{{- define "fraudstream.secretsMount" -}}
- {name: secrets, mountPath: {{ .Values.config.secrets_dir | quote }}, readOnly: true}
{{- end -}}
