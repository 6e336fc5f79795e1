#!/usr/bin/env bash
# Endpoint Stats on a local minikube cluster. docs/OPERATIONS.md explains each step.
#
#   deploy/minikube.sh up        build the image into minikube, apply the overlay, wait, print the URLs
#   deploy/minikube.sh down      remove the app (keeps the namespace and the data volumes)
#   deploy/minikube.sh down --volumes   remove everything, data included
#   deploy/minikube.sh status    pods, rollouts, autoscalers, volumes and their usage
#   deploy/minikube.sh backup    run `manage.py backup` in the cluster and copy the file to ./backups/
#   deploy/minikube.sh debug     a throwaway debugging pod in the namespace (removed on exit)
#   deploy/minikube.sh secrets   write the local-only credentials if missing (up does it too)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMESPACE="endpoint-stats"
OVERLAY_REL="deploy/kustomize/overlays/minikube"
SECRETS_DIR="${ES_SECRETS_DIR:-$ROOT/$OVERLAY_REL/secrets}"
HOST="endpoint-stats.local"
KUBECTL="${KUBECTL:-kubectl}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (${2:-see docs/OPERATIONS.md})"; }
kc() { "$KUBECTL" --namespace "$NAMESPACE" "$@"; }

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

random_token() {
  # 32 random bytes as hex: safe inside URLs and env files.
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# Local-only credentials, random on first use, never committed (*.env is git-ignored).
write_secrets() {
  mkdir -p "$SECRETS_DIR"
  # The limiter's /check token (added later than the rest: written on its own when missing).
  if [[ ! -f "$SECRETS_DIR/limiter.env" ]]; then
    (umask 077 && printf 'token=%s\n' "$(random_token)" >"$SECRETS_DIR/limiter.env")
  fi
  if [[ -f "$SECRETS_DIR/app.env" ]]; then
    return 0
  fi
  umask 077
  local pg redis grafana_admin grafana_db
  pg="$(random_token)"
  redis="$(random_token)"
  grafana_admin="$(random_token)"
  grafana_db="$(random_token)"
  printf 'POSTGRES_PASSWORD=%s\n' "$pg" >"$SECRETS_DIR/postgres.env"
  printf 'REDIS_PASSWORD=%s\n' "$redis" >"$SECRETS_DIR/redis.env"
  printf 'admin-user=admin\nadmin-password=%s\n' "$grafana_admin" >"$SECRETS_DIR/grafana-admin.env"
  printf 'host=postgres\nport=5432\ndatabase=endpointstats\nuser=grafana_ro\npassword=%s\nsslmode=disable\n' \
    "$grafana_db" >"$SECRETS_DIR/grafana-db.env"
  # Written last: its presence means the set is complete.
  {
    printf 'DJANGO_SECRET_KEY=%s%s\n' "$(random_token)" "$(random_token)"
    printf 'DATABASE_URL=postgres://endpointstats:%s@postgres:5432/endpointstats\n' "$pg"
    printf 'REDIS_URL=redis://:%s@redis:6379/0\n' "$redis"
  } >"$SECRETS_DIR/app.env"
  say "Wrote local credentials to ${SECRETS_DIR#"$ROOT"/}/ (git-ignored)"
}

# The release tag: the git revision (plus -dirty for uncommitted changes). No dots, so the
# migrate Job's name (migrate-<tag>) is a valid DNS label.
release_tag() {
  local tag
  tag="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo nogit)"
  if ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then
    tag="${tag}-dirty-$(date +%s)"
  fi
  printf '%s' "$tag"
}

# Render the overlay with the image tag set, from a copy (the committed files stay untouched).
render() {
  local tag="$1" work
  work="$(mktemp -d)"
  cp -R "$ROOT/deploy/kustomize" "$work/"
  rm -rf "$work/kustomize/overlays/minikube/secrets"
  cp -R "$SECRETS_DIR" "$work/kustomize/overlays/minikube/secrets"
  sed -i.orig "s/^    newTag: dev$/    newTag: ${tag}/" "$work/kustomize/overlays/minikube/kustomization.yaml"
  "$KUBECTL" kustomize "$work/kustomize/overlays/minikube"
  rm -rf "$work"
}

cmd_up() {
  need minikube "https://minikube.sigs.k8s.io/docs/start/"
  need docker
  need "$KUBECTL"
  minikube status >/dev/null 2>&1 || die "minikube is not running: minikube start --cni=calico --cpus=4 --memory=8192"
  say "Enabling the ingress and metrics-server addons"
  minikube addons enable ingress >/dev/null
  minikube addons enable metrics-server >/dev/null

  local tag
  tag="$(release_tag)"
  say "Building endpoint-stats:${tag} inside minikube's Docker"
  # shellcheck disable=SC2046  # word splitting of the export lines is intended
  eval $(minikube docker-env)
  docker build --tag "endpoint-stats:${tag}" "$ROOT"

  write_secrets
  say "Applying ${OVERLAY_REL}"
  render "$tag" | "$KUBECTL" apply -f -

  say "Waiting for the data stores"
  kc rollout status statefulset/postgres --timeout=300s
  kc rollout status statefulset/redis --timeout=300s
  say "Waiting for the migrate Job of this release (migrate-${tag})"
  kc wait --for=condition=complete "job/migrate-${tag}" --timeout=600s ||
    { kc logs "job/migrate-${tag}" --tail=50 || true; die "migrations did not complete"; }
  for deployment in web limiter worker beat grafana prometheus; do
    kc rollout status "deployment/${deployment}" --timeout=300s
  done

  local ip
  ip="$(minikube ip)"
  cat <<MSG

Endpoint Stats ${tag} is up in namespace ${NAMESPACE}.
Add this line to /etc/hosts once (the Ingress answers for ${HOST}):
    ${ip} ${HOST}

  API        http://${HOST}/api/          (stats: /api/stats, health: /api/health, docs: /api/api/docs/)
  Admin      http://${HOST}/admin/        (create a user: kubectl -n ${NAMESPACE} exec -it deploy/web -- python manage.py createsuperuser)
  Grafana    http://${HOST}/grafana/      (user and password: ${OVERLAY_REL}/secrets/grafana-admin.env)
  Without /etc/hosts: curl -H 'Host: ${HOST}' http://${ip}/api/health
  Prometheus kubectl -n ${NAMESPACE} port-forward svc/prometheus 9090  ->  http://127.0.0.1:9090/
MSG
}

cmd_down() {
  need "$KUBECTL"
  if [[ "${1:-}" == "--volumes" ]]; then
    say "Deleting namespace ${NAMESPACE} with its data volumes"
    "$KUBECTL" delete namespace "$NAMESPACE" --ignore-not-found --wait=true
  else
    say "Deleting the app; the namespace and the data volumes stay (down --volumes removes them)"
    kc delete deployment,statefulset,job,service,ingress,horizontalpodautoscaler,poddisruptionbudget,networkpolicy,configmap,secret,serviceaccount,role,rolebinding \
      --selector app.kubernetes.io/part-of=endpoint-stats --ignore-not-found
  fi
  "$KUBECTL" delete clusterrole,clusterrolebinding --selector app.kubernetes.io/part-of=endpoint-stats --ignore-not-found
}

# df inside a pod, for the given mount points; quiet when the pod is not there.
volume_usage() {
  local selector="$1" container="$2"
  shift 2
  local pod
  pod="$(kc get pods --selector "$selector" --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  if [[ -z "$pod" ]]; then
    printf '  %s: no running pod\n' "$selector"
    return 0
  fi
  kc exec "$pod" --container "$container" -- df -h "$@" | sed "s|^|  ${pod}: |"
}

cmd_status() {
  need "$KUBECTL"
  kc get deployments,statefulsets,jobs,horizontalpodautoscalers,poddisruptionbudgets -o wide
  echo
  kc get pods -o wide
  echo
  kc get persistentvolumeclaims
  echo
  say "Volume usage"
  volume_usage app.kubernetes.io/component=postgres postgres /var/lib/postgresql/data
  volume_usage app.kubernetes.io/component=redis redis /data
  volume_usage app.kubernetes.io/component=worker worker /var/backups/endpointstats /tmp
  volume_usage app.kubernetes.io/component=prometheus prometheus /prometheus
  echo
  say "Resource use (metrics-server)"
  kc top pods 2>/dev/null || echo "  (metrics-server not ready: minikube addons enable metrics-server)"
  echo
  say "Quota"
  kc describe resourcequota endpoint-stats 2>/dev/null | sed -n '/Resource/,$p' || true
}

cmd_backup() {
  need "$KUBECTL"
  local pod dir name
  pod="$(kc get pods --selector app.kubernetes.io/component=worker --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].metadata.name}')"
  [[ -n "$pod" ]] || die "no running worker pod to run the backup in"
  dir="/var/backups/endpointstats"
  say "Running manage.py backup in ${pod}"
  kc exec "$pod" --container worker -- python manage.py backup
  # The newest complete backup (a running one is still *.partial).
  name="$(kc exec "$pod" --container worker -- sh -c "ls -t ${dir}/endpointstats-* | grep -v '\.partial$' | head -n 1")"
  name="${name##*/}"
  [[ -n "$name" ]] || die "the backup command left no file in ${dir}"
  mkdir -p "$ROOT/backups"
  say "Copying ${name} to backups/"
  kc cp --container worker "${pod}:${dir}/${name}" "$ROOT/backups/${name}"
  ls -lh "$ROOT/backups/${name}"
}

cmd_debug() {
  need "$KUBECTL"
  local name
  local -a edits
  name="debug-$(date +%s)-$$"
  edits=(-e "s/^  name: debug$/  name: ${name}/")
  if [[ -n "${DEBUG_IMAGE:-}" ]]; then
    edits+=(-e "s|^      image: .*|      image: ${DEBUG_IMAGE}|")
  fi
  say "Starting throwaway pod ${name} (removed when you leave the shell)"
  # shellcheck disable=SC2064  # expand the name now
  trap "\"$KUBECTL\" --namespace \"$NAMESPACE\" delete pod \"$name\" --ignore-not-found --wait=false >/dev/null" EXIT
  sed "${edits[@]}" "$ROOT/$OVERLAY_REL/debug/pod.yaml" | "$KUBECTL" apply -f -
  kc wait --for=condition=Ready "pod/${name}" --timeout=180s
  cat <<MSG
Try: dig web.${NAMESPACE}.svc.cluster.local; curl -s http://web/health; nc -zv postgres 5432; nc -zv redis 6379
MSG
  kc exec -it "$name" -- sh -c 'command -v bash >/dev/null && exec bash || exec sh'
}

main() {
  local command="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    backup) cmd_backup "$@" ;;
    debug) cmd_debug "$@" ;;
    secrets) write_secrets ;;
    render) write_secrets && render "${1:-dev}" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
