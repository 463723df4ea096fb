{{- define "fraudstream.labels" -}}
app.kubernetes.io/name: fraudstream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The settings as FRAUDSTREAM_* variables, empty values left out (application defaults). */}}
{{- define "fraudstream.env" -}}
{{- range $key, $value := . }}
{{- if ne (toString $value) "" }}
FRAUDSTREAM_{{ upper $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}
