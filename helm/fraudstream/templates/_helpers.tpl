{{- define "fraudstream.fullname" -}}
{{- printf "%s-fraudstream" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A component's object name, <release>-fraudstream-<component>, the prefix cut so the whole
     fits a DNS label (63), a CronJob's name (52: its Jobs add a suffix) and the Flink job's
     cluster id (45): (dict "root" $ "component" "scoring"). */}}
{{- define "fraudstream.name" -}}
{{- $full := include "fraudstream.fullname" .root }}
{{- $suffix := printf "-%s" .component }}
{{- $limit := get (dict "job" 45 "training" 52) .component | default 63 }}
{{- if gt (add (len $full) (len $suffix)) $limit }}
{{- /* Cut, with a hash of the whole name kept: two long release names never meet. */}}
{{- $suffix = printf "-%s%s" ($full | sha256sum | trunc 6) $suffix }}
{{- end }}
{{- printf "%s%s" ($full | trunc (sub $limit (len $suffix) | int) | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* A component's image: <registry>/fraudstream-<component>:<tag> (the Dockerfile's targets). */}}
{{- define "fraudstream.image" -}}
{{- $image := .root.Values.image }}
{{- $registry := required "image.registry is required: the registry you pushed the images to (docs/deployment.md, step 2)" $image.registry }}
{{- printf "%s/fraudstream-%s:%s" $registry .component (default .root.Chart.AppVersion $image.tag) | quote -}}
{{- end -}}

{{/* Checksums of the settings and of the secrets given (not of a scoring token the chart
     makes, which would differ at every render): a change rolls the pods that read them. */}}
{{- define "fraudstream.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ list .Values.existingSecret .Values.secrets | toJson | sha256sum }}
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
{{ default (include "fraudstream.name" (dict "root" . "component" "secrets")) .Values.existingSecret }}
{{- end -}}

{{- define "fraudstream.configName" -}}
{{ include "fraudstream.name" (dict "root" . "component" "config") }}
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
{{- $previous := lookup "v1" "Secret" .Release.Namespace (include "fraudstream.secretName" .) }}
{{- $kept := "" }}
{{- if and $previous $previous.data $previous.data.scoring_token }}
{{- $kept = $previous.data.scoring_token | b64dec }}
{{- end }}
{{- $token := .Values.secrets.scoring_token | default $kept | default (randAlphaNum 48) }}
{{- $key := required "secrets.token_key is required: 32 bytes or more in hex (openssl rand -hex 32), from your secret store; it tokenizes every card number" .Values.secrets.token_key }}
{{- if not (regexMatch "^([0-9a-fA-F]{2}){32,}$" $key) }}
{{- fail "secrets.token_key must be hex, 32 bytes or more (openssl rand -hex 32)" }}
{{- end }}
{{- range $key, $value := merge (dict "scoring_token" $token) .Values.secrets }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* What every container of the chart gets: settings, secrets as files (never in the
     environment, which a process hands to all it starts), a non-root context. */}}
{{- define "fraudstream.containerCommon" -}}
image: {{ include "fraudstream.image" . }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
workingDir: /tmp  # writable (an emptyDir): DuckDB spills there, nothing lands on the root
env:
  - name: FRAUDSTREAM_STATE_DIR  # a writable volume: the root file system is read-only
    value: {{ default "/var/lib/fraudstream" .root.Values.config.state_dir | quote }}
envFrom:
  - configMapRef:
      name: {{ include "fraudstream.configName" .root }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
{{- end -}}

{{/* The shared volumes: the model registry (scoring reads it, training writes it) and the
     lake (the feedback app writes it, training reads it). */}}
{{- define "fraudstream.claimName" -}}
{{- $storage := get .root.Values.storage .volume }}
{{- default (include "fraudstream.name" (dict "root" .root "component" .volume)) $storage.existingClaim -}}
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

{{- define "fraudstream.jobServiceAccountName" -}}
{{- if .Values.job.serviceAccount.create -}}
{{ default (include "fraudstream.name" (dict "root" . "component" "flink")) .Values.job.serviceAccount.name }}
{{- else -}}
{{ default "flink" .Values.job.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* A pod's volume of a shared claim: (dict "root" $ "volume" "models"). */}}
{{- define "fraudstream.claimVolume" -}}
- name: {{ .volume }}
  persistentVolumeClaim:
    claimName: {{ include "fraudstream.claimName" . }}
{{- end -}}

{{/* An init container that creates the pipeline's topics (kept if they exist) before the
     feedback app or the job reads them: (dict "root" $ "component" "feedback"). */}}
{{- define "fraudstream.topicsInit" -}}
{{- $topics := .root.Values.topics }}
- name: topics
  {{- include "fraudstream.containerCommon" . | nindent 2 }}
  {{- if eq .component "job" }}
  command: ["fraudstream"]
  {{- end }}
  args: ["topics", "create", "--partitions", {{ $topics.partitions | quote }},
         "--replication-factor", {{ $topics.replicationFactor | quote }}, "--timeout", "120"]
  resources:
    requests: {cpu: 50m, memory: 128Mi, ephemeral-storage: 10Mi}
    limits: {cpu: 500m, memory: 256Mi, ephemeral-storage: 100Mi}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    {{- include "fraudstream.secretsMount" .root | nindent 4 }}
{{- end -}}

{{/* Replicas apart: one node (or zone) lost leaves the others serving: (dict "root" $
     "component" "scoring"). */}}
{{- define "fraudstream.spread" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "fraudstream.componentSelector" . | nindent 12 }}
    - weight: 50
      podAffinityTerm:
        topologyKey: topology.kubernetes.io/zone
        labelSelector:
          matchLabels:
            {{- include "fraudstream.componentSelector" . | nindent 12 }}
{{- end -}}
