{{/* The release-scoped base name of every object. */}}
{{- define "sdc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sdc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: sdc
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The common labels plus the component's name: app.kubernetes.io/instance once (kustomize and some
     API clients refuse a mapping with a key twice). */}}
{{- define "sdc.componentLabels" -}}
{{ include "sdc.labels" .root }}
app.kubernetes.io/name: {{ .component }}
{{- end -}}

{{- define "sdc.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "sdc.operator.name" -}}{{ include "sdc.fullname" . }}-operator{{- end -}}
{{- define "sdc.orchestrator.name" -}}{{ include "sdc.fullname" . }}-orchestrator{{- end -}}
{{- define "sdc.apiKeysSecret" -}}{{ .Values.orchestrator.auth.existingSecret | default (printf "%s-api-keys" (include "sdc.fullname" .)) }}{{- end -}}
{{- define "sdc.endpointsConfigMap" -}}{{ include "sdc.fullname" . }}-endpoints{{- end -}}

{{- define "sdc.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Restricted Pod Security: non-root, no privilege escalation, no capabilities, read-only root. */}}
{{- define "sdc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sdc.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sdc.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The verbs and resources the operator needs in each namespace it manages. No wildcards. */}}
{{- define "sdc.operator.namespacedRules" -}}
{{- /* LocalLLMs are read only: the operator writes their status, never their spec or metadata. */}}
- apiGroups: ["llm.sdc.dev"]
  resources: ["localllms"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["llm.sdc.dev"]
  resources: ["localllms/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- /* The download step's log, read for its progress (bytes, percent, estimate) into status.download. */}}
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- /* NetworkPolicies: each LocalLLM outside the chart's namespaces gets one (owned, labelled, watched by that
     label); the operator deletes only its own (owner reference UID, and the UID as a delete precondition). */}}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- /* Secrets: `get` by name only (no list, no watch: the operator cannot enumerate them), for the labels of
     the ones a LocalLLM names (llm.sdc.dev/allow-localllm). RBAC cannot grant metadata alone; the operator
     asks for PartialObjectMetadata, so values never reach it. Claims are already readable (it makes caches). */}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch", "create"]
{{- end -}}

{{/* The engines' policy values for the operator (SDC_ENGINE_NETWORK_POLICY, JSON): it gives LocalLLMs outside
     chartNamespaces a NetworkPolicy of their own, with the rules networkpolicy.yaml renders for the others. */}}
{{- define "sdc.engineNetworkPolicy" -}}
{{- $np := .Values.networkPolicy -}}
{{- $orchestrator := include "sdc.selectorLabels" (dict "component" "sdc-orchestrator" "root" .) | fromYaml -}}
{{- $out := dict "orchestratorNamespace" .Release.Namespace "orchestratorLabels" $orchestrator "ingressFrom" ($np.engineIngressFrom | default list) "chartNamespaces" (splitList "," (include "sdc.servedNamespaces" .)) -}}
{{- with $np.engineEgress }}{{- if .enabled }}
{{- $_ := set $out "egress" (dict "exceptCidrs" .exceptCidrs "dnsTo" (.dnsTo | default list) "extraTo" (.extraTo | default list)) -}}
{{- end }}{{- end }}
{{- toJson $out -}}
{{- end -}}

{{/* The namespaces whose LocalLLMs this release serves: its own, plus routing.namespaces (without "*"). */}}
{{- define "sdc.servedNamespaces" -}}
{{- $out := list .Release.Namespace }}
{{- range .Values.routing.namespaces }}{{- if and (ne . "*") (not (has . $out)) }}{{- $out = append $out . }}{{- end }}{{- end }}
{{- join "," $out -}}
{{- end -}}
