{{/* The chart name, or nameOverride. */}}
{{- define "netmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the objects: fullnameOverride, else <release>-<name> (just the release
name when it already contains the chart name). */}}
{{- define "netmon.fullname" -}}
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

{{/* chart: name-version, for the helm.sh/chart label. */}}
{{- define "netmon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "netmon.labels" -}}
helm.sh/chart: {{ include "netmon.chart" . }}
{{ include "netmon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{/* The DaemonSet's selector (immutable: never add to it). */}}
{{- define "netmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "netmon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "netmon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "netmon.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* --metrics-address: metrics.address and metrics.port; a bare IPv6 address gets brackets.
A loopback address is refused: the kubelet's probes connect to the pod's IP. */}}
{{- define "netmon.metricsAddress" -}}
{{- $address := toString .Values.metrics.address }}
{{- $host := trimSuffix "]" (trimPrefix "[" $address) }}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") }}
{{- fail (printf "metrics.address %s is a loopback address: the kubelet's probes and Prometheus could not connect (docs/deployment.md)" $address) }}
{{- end }}
{{- if and (contains ":" $address) (not (hasPrefix "[" $address)) }}
{{- printf "[%s]:%v" $address .Values.metrics.port }}
{{- else }}
{{- printf "%s:%v" $address .Values.metrics.port }}
{{- end }}
{{- end }}

{{/* The agent's config file: the `config` value, with the chart's metrics.edges, maxEdges,
edgeIdleSeconds, edgePorts and edgeHostWorkload values merged into its metrics mapping (edges,
max_edges, edge_idle_seconds, edge_ports, edge_host_workload), and the `kubernetes` values into
its kubernetes mapping (api_url, watch_services, watch_nodes, watch_pods, peer_labels,
external_networks). Those keys in `config.metrics` or `config.kubernetes` too are refused rather
than silently overridden. external_networks is written by hand, one class per line in the list's
order: toYaml sorts a mapping's keys, and the agent names an address after the first class that
contains it. Names and CIDRs are written as JSON strings, which YAML reads unchanged. */}}
{{- define "netmon.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $kube := dict }}
{{- if hasKey $config "kubernetes" }}
{{- if not (kindIs "map" $config.kubernetes) }}
{{- fail "config.kubernetes must be a mapping (docs/configuration.md)" }}
{{- end }}
{{- $kube = $config.kubernetes }}
{{- end }}
{{- $owned := dict "api_url" "apiUrl" "watch_services" "watchServices" "watch_nodes" "watchNodes" "watch_pods" "watchPods" "peer_labels" "peerLabels" "external_networks" "externalNetworks" }}
{{- range $key := keys $owned | sortAlpha }}
{{- if hasKey $kube $key }}
{{- fail (printf "config.kubernetes.%s: set the chart value kubernetes.%s instead (docs/deployment.md)" $key (get $owned $key)) }}
{{- end }}
{{- end }}
{{- /* default dict: a release upgraded with --reuse-values from a chart without these values */}}
{{- $values := .Values.kubernetes | default dict }}
{{- if $values.apiUrl }}
{{- $_ := set $kube "api_url" $values.apiUrl }}
{{- end }}
{{- /* watchServices and watchNodes default to true: `default` would turn a false into true */}}
{{- $_ := set $kube "watch_services" (ternary $values.watchServices true (hasKey $values "watchServices")) }}
{{- $_ := set $kube "watch_nodes" (ternary $values.watchNodes true (hasKey $values "watchNodes")) }}
{{- $_ := set $kube "watch_pods" ($values.watchPods | default false) }}
{{- $_ := set $kube "peer_labels" ($values.peerLabels | default false) }}
{{- $seen := dict }}
{{- range $values.externalNetworks }}
{{- if hasKey $seen .name }}
{{- fail (printf "kubernetes.externalNetworks: the class %s is given twice" (.name | quote)) }}
{{- end }}
{{- if eq .name "internet" }}
{{- fail "kubernetes.externalNetworks: \"internet\" names the addresses in no class; give the class another name" }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- /* The edge settings (metrics.edges ... edgeHostWorkload) into config.metrics; a value absent
(a release upgraded with --reuse-values) leaves the agent's default. */}}
{{- $metrics := dict }}
{{- if hasKey $config "metrics" }}
{{- if not (kindIs "map" $config.metrics) }}
{{- fail "config.metrics must be a mapping (docs/configuration.md)" }}
{{- end }}
{{- $metrics = $config.metrics }}
{{- end }}
{{- $edgeKeys := dict "edges" "edges" "max_edges" "maxEdges" "edge_idle_seconds" "edgeIdleSeconds" "edge_ports" "edgePorts" "edge_host_workload" "edgeHostWorkload" }}
{{- $metricValues := .Values.metrics | default dict }}
{{- range $key := keys $edgeKeys | sortAlpha }}
{{- $value := get $edgeKeys $key }}
{{- if hasKey $metrics $key }}
{{- fail (printf "config.metrics.%s: set the chart value metrics.%s instead (docs/deployment.md)" $key $value) }}
{{- end }}
{{- if hasKey $metricValues $value }}
{{- $_ := set $metrics $key (get $metricValues $value) }}
{{- end }}
{{- end }}
{{- if $metrics }}
{{- $_ := set $config "metrics" $metrics }}
{{- end }}
{{- with omit $config "kubernetes" }}
{{- toYaml . }}{{ "\n" }}
{{- end -}}
kubernetes:
  {{- toYaml $kube | nindent 2 }}
  {{- with $values.externalNetworks }}
  external_networks:
    {{- range . }}
    {{ .name | toJson }}: {{ .cidrs | toJson }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* "true" when the agent reads the node's conntrack (nat.conntrack, default true), else "". */}}
{{- define "netmon.conntrack" -}}
{{- $nat := .Values.nat | default dict }}
{{- if ternary $nat.conntrack true (hasKey $nat "conntrack") }}true{{ end }}
{{- end }}

{{/* The capabilities added to the container: `capabilities`, and SYS_ADMIN when the agent has to
enter the node's network namespace for its conntrack (nat.conntrack without hostNetwork). */}}
{{- define "netmon.capabilities" -}}
{{- $caps := .Values.capabilities | default list }}
{{- if and (include "netmon.conntrack" .) (not .Values.hostNetwork) (not (has "SYS_ADMIN" $caps)) }}
{{- $caps = append $caps "SYS_ADMIN" }}
{{- end }}
{{- with $caps }}{{ toYaml . }}{{ end }}
{{- end }}
