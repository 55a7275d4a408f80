#!/usr/bin/env bash
# The whole gitops-push loop on a throwaway copy of this example repository:
# a git repo with a bare origin, plan, apply, a change, plan/apply again, the audit log,
# drift (induced by hand, detected, fixed). Terraform runs for real (terraform_data,
# no providers to download). The Kubernetes stack is linted and rendered; it is planned
# and applied only when WEB_KUBECONFIG points at a cluster.
# Everything is created under one temporary directory, removed at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gp="${GITOPS_PUSH:-gitops-push}"
work="$(mktemp -d "${TMPDIR:-/tmp}/gitops-push-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT

export GIT_AUTHOR_NAME="Demo Dev" GIT_AUTHOR_EMAIL="dev@example.com"
export GIT_COMMITTER_NAME="Demo Dev" GIT_COMMITTER_EMAIL="dev@example.com"
export GITOPS_PUSH_PLUGIN_CACHE_DIR="$work/plugin-cache"
export GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_NOSYSTEM=1
export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
: > "$GIT_CONFIG_GLOBAL"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

git init -q --bare -b main "$work/origin.git"
mkdir "$work/repo"
cp -R "$here/." "$work/repo/"
rm -f "$work/repo/demo.sh"
cd "$work/repo"
git init -q -b main
git remote add origin "$work/origin.git"
git add -A
git commit -q -m "Initial infrastructure"
git push -q -u origin main
git remote set-head origin main

stacks=(--stack network --stack app)
if [[ -n "${WEB_KUBECONFIG:-}" ]] && kubectl --kubeconfig "$WEB_KUBECONFIG" version >/dev/null 2>&1; then
  stacks=()
  echo "Kubernetes: using the cluster in WEB_KUBECONFIG"
else
  echo "Kubernetes: no cluster configured (set WEB_KUBECONFIG to plan and apply the web stack);"
  echo "            the web stack is linted and rendered only."
fi

run "$gp" changed --all
run "$gp" lint --all
# First deployment: app reads network's outputs, so it can only be planned once network
# exists. Plain `apply` plans and applies stack by stack, wave by wave.
run "$gp" apply "${stacks[@]}"

step "edit modules/service/main.tf (a shared local module) and infra/app/main.tf, commit, push"
sed -i.bak 's/default = 2/default = 3/' infra/app/main.tf && rm infra/app/main.tf.bak
printf '\n# tagged for the demo\n' >> modules/service/main.tf
git commit -q -am "Scale the web service to 3 replicas"
git push -q origin main

run "$gp" changed --base HEAD~1
# Now the reviewed-plan flow: plan saves plans, apply applies exactly those.
run "$gp" plan "${stacks[@]}" --plan-dir "$work/plans" --summary-md "$work/plan.md"
run "$gp" apply "${stacks[@]}" --plan-dir "$work/plans"
run "$gp" audit log
run "$gp" status

step "someone changes the network by hand (terraform apply outside the pipeline)"
(cd infra/network && terraform apply -input=false -auto-approve -no-color \
  -var cidr=10.99.0.0/16 >/dev/null)
set +e
step "$gp drift ${stacks[*]}"
"$gp" drift "${stacks[@]}"
code=$?
set -e
echo "drift exit code: $code (4 = drift detected)"
run "$gp" drift "${stacks[@]}" --fix
run "$gp" audit verify
echo
echo "Done: everything above ran in $work (now removed)."
