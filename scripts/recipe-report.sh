#!/usr/bin/env bash
# Regenerates docs/recipe-report.md and its plots (docs/recipe-report/*.svg)
# from dapt's own small runs on the bundled sample (data/sample + data/corpus):
# each claim of the write-up that can be measured today, with the commands,
# seeds and machine. Every figure in the report is one this script printed
# (its full log is kept in out/recipe/log.txt).
# Claims: 1 document masks, 2 RoPE scaling and a length curriculum, 3 loss-spike
# rollback on a poisoned corpus, 4 perplexity filtering per length bucket, 5 JSON
# validity after LoRA with and without extra valid-JSON answers.
# Usage: scripts/recipe-report.sh [--only 3]   (after scripts/setup.sh; a few minutes on 2 cores)
#   --only 3: prepare the data and rerun claim 3 alone, replacing only its
#   section of docs/recipe-report.md (the other claims keep their figures).
# Uses python3 (standard library only) for the noise injection of
# scripts/bench/filter_noise.py.
set -euo pipefail
cd "$(dirname "$0")/.."
only=""
case "${1:-}" in
  "") ;;
  --only) [ "${2:-}" = 3 ] || { echo "recipe-report: --only takes 3 (the claim that can be rerun alone)" >&2; exit 2; }; only=3 ;;
  *) echo "usage: scripts/recipe-report.sh [--only 3]" >&2; exit 2 ;;
esac
all() { [ -z "$only" ]; }
dapt="$(swift build -c release --show-bin-path)/dapt"
[ -x "$dapt" ] || { echo "recipe-report: $dapt is not built; run scripts/setup.sh" >&2; exit 2; }
out=out/recipe; docs=docs/recipe-report; md=docs/recipe-report.md
rm -rf "$out"; mkdir -p "$out" "$docs"
if all; then rm -f "$docs"/*.svg; else rm -f "$docs"/claim3-*.svg; fi
# One process with two BLAS threads (threads × ranks ≤ 2 cores).
export OPENBLAS_NUM_THREADS=2
log="$out/log.txt"; : > "$log"
say() { echo "$*" | tee -a "$log"; }
run() { say "\$ $*"; "$@" 2>>"$out/stderr.txt" | tee -a "$log"; }
quiet() { "$@" >>"$out/stderr.txt" 2>&1; }
started=$(date -u +%s)

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources || echo ' (with local changes)')"
say "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $machine; dapt at $commit"

# ---------------------------------------------------------------- data
# Training text: the hand-written sample and the first 600 generated patents,
# through prepare and dedup; 40 generated patents are held out whole (long
# documents for perplexity at 4× the training length).
head -n 600 data/corpus/patents.jsonl > "$out/train-patents.jsonl"
tail -n 40 data/corpus/patents.jsonl > "$out/heldout-patents.jsonl"
quiet "$dapt" prepare --config configs/prepare.yaml --input data/sample/patents.jsonl --input data/sample/texts \
  --input "$out/train-patents.jsonl" --output "$out/prepare" --merge
quiet "$dapt" dedup --input "$out/prepare/manifest.json" --config configs/dedup.yaml --output "$out/dedup"
# The held-out patents through prepare too (the text the model is trained on:
# method steps), their fragments joined again into one document per patent.
quiet "$dapt" prepare --config configs/prepare.yaml --input "$out/heldout-patents.jsonl" --output "$out/heldout-prepare" --merge
python3 - "$out/heldout-prepare/fragments.jsonl" > "$out/heldout.jsonl" <<'PY'
import json, sys
patents = {}
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    patents.setdefault(r["patent"], []).append(r["text"])
for texts in patents.values():
    print(json.dumps({"text": "\n".join(texts)}, ensure_ascii=False))
PY
quiet "$dapt" tokenizer train --config configs/tokenizer.yaml --input "$out/dedup/kept.jsonl" --vocab-size 2048 --output "$out/tokenizer.json"
quiet "$dapt" tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/tokenizer.json" --input "$out/dedup/kept.jsonl" --output "$out/tokens"
say "data: $("$dapt" report --run "$out" | grep -E '^(prepare|dedup|tokenizer) ' | sed 's/ → .*//' | tr -s ' ' | paste -sd ';' -)"

if all; then
# ---------------------------------------------------------------- claim 1
# The same run with and without document masks over long packed sequences
# (256 tokens: about a dozen fragments of mixed patents and languages each).
c1=(--config configs/pretrain-tiny.yaml --input "$out/tokens" --steps 120
    --set data.sequence_length=256 --set data.global_batch_size=8 --set data.held_out_fraction=0.05
    --set eval.every_steps=40 --set checkpoint.every_steps=0 --set spikes.enabled=false --set log_every_steps=1000)
say ""; say "== claim 1: document masks on long packed sequences"
for masks in true false; do
  run "$dapt" pretrain "${c1[@]}" --set data.document_masks=$masks --output "$out/c1-masks-$masks" >/dev/null
done
run "$dapt" report compare --run masks=$out/c1-masks-true --run no-masks=$out/c1-masks-false \
  --plot "$docs/claim1-loss.svg" --title "document masks on (masks) and off (no-masks), sequence 256" | tee "$out/c1-table.md"

# ---------------------------------------------------------------- claim 2
# Train at L = 64 positions, then evaluate the held-out patents at L and 4L
# with each way of stretching RoPE (applied at evaluation, no further training).
L=64; L4=$((4 * L))
say ""; say "== claim 2: RoPE scaling when stretching the context from $L to $L4"
run "$dapt" pretrain --config configs/pretrain-tiny.yaml --input "$out/tokens" --output "$out/c2-base" --steps 150 \
  --set data.sequence_length=$L --set model.max_position_embeddings=$L --set data.global_batch_size=16 \
  --set checkpoint.every_steps=0 --set eval.every_steps=0 --set log_every_steps=1000 >/dev/null
ppl() {  # label, length, --set options...
  local label=$1 length=$2; shift 2
  local line
  line=$("$dapt" eval ppl --checkpoint "${c2model:-$out/c2-base}" --input "$out/heldout.jsonl" --sequence-length "$length" "$@" 2>>"$out/stderr.txt")
  echo "$label at $length: $line  [eval ppl --checkpoint ${c2model:-$out/c2-base} --sequence-length $length $*]" | tee -a "$log" >&2
  echo "$line" | awk '{print $2}'
}
declare -A at
rows=("none" "linear ×4" "dynamic NTK ×4" "YaRN ×4" "rope_theta ×4 (40000)")
opts=("--set max_position_embeddings=$L4"
      "--set rope_scaling.rope_type=linear --set rope_scaling.factor=4"
      "--set rope_scaling.rope_type=dynamic --set rope_scaling.factor=4"
      "--set rope_scaling.rope_type=yarn --set rope_scaling.factor=4 --set rope_scaling.original_max_position_embeddings=$L"
      "--set rope_theta=40000 --set max_position_embeddings=$L4")
for i in "${!rows[@]}"; do
  # shellcheck disable=SC2086
  at["$i,L"]=$(ppl "${rows[$i]}" $L ${opts[$i]})
  # shellcheck disable=SC2086
  at["$i,4L"]=$(ppl "${rows[$i]}" $L4 ${opts[$i]})
done
# The same model trained with a length curriculum L → 2L → 4L (150 steps, the
# same tokens per step), YaRN ×2 then ×4 over the original L positions; its
# checkpoint keeps the last stage's RoPE, so it is evaluated as saved.
curriculum="[{until_step: 50, sequence_length: $L}, {until_step: 100, sequence_length: $((2 * L)), rope_scaling: {rope_type: yarn, factor: 2, original_max_position_embeddings: $L}}, {until_step: 150, sequence_length: $L4, rope_scaling: {rope_type: yarn, factor: 4, original_max_position_embeddings: $L}}]"
run "$dapt" pretrain --config configs/pretrain-tiny.yaml --input "$out/tokens" --output "$out/c2-curriculum" --steps 150 \
  --set data.sequence_length=$L --set model.max_position_embeddings=$L --set data.global_batch_size=16 \
  --set checkpoint.every_steps=0 --set eval.every_steps=0 --set log_every_steps=1000 --set "curriculum=$curriculum" >/dev/null
i=${#rows[@]}; rows+=("YaRN ×4 after a curriculum $L → $((2 * L)) → $L4 (trained)")
at["$i,L"]=$(c2model="$out/c2-curriculum" ppl "${rows[$i]}" $L)
at["$i,4L"]=$(c2model="$out/c2-curriculum" ppl "${rows[$i]}" $L4)

# ---------------------------------------------------------------- claim 4
# Clean records of the sample with injected noise of known kinds (random
# bytes, shuffled characters, mojibake, digit debris, boilerplate), filtered
# under a reference model trained on a separate clean slice: per length bucket
# (configs/filter.yaml: 4 buckets × language) and, for contrast, one bucket.
say ""; say "== claim 4: perplexity filtering per length bucket"
python3 scripts/bench/filter_noise.py make "$out/dedup/kept.jsonl" "$out/c4-ref.jsonl" "$out/c4-eval.jsonl" --reference 1100 --clean 600 --per-kind 30
quiet "$dapt" tokenizer train --config configs/tokenizer.yaml --input "$out/c4-ref.jsonl" --vocab-size 1024 --output "$out/c4-ref-tokenizer.json"
quiet "$dapt" tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/c4-ref-tokenizer.json" --input "$out/c4-ref.jsonl" --output "$out/c4-ref-tokens"
quiet "$dapt" pretrain --config configs/pretrain-tiny.yaml --input "$out/c4-ref-tokens" --output "$out/c4-ref" --steps 100 --set eval.sequences=0
for variant in buckets one-bucket; do
  extra=(); [ "$variant" = one-bucket ] && extra=(--set buckets=1)
  run "$dapt" filter --config configs/filter.yaml --input "$out/c4-eval.jsonl" --model "$out/c4-ref" --output "$out/c4-$variant" "${extra[@]}" \
    | grep -E "records in|perplexity" || true
  say "quality ($variant):"; python3 scripts/bench/filter_noise.py quality "$out/c4-$variant" | tee -a "$log" > "$out/c4-$variant-quality.txt"
done
mkdir -p "$out/c4-page"; ln -sfn "../c4-buckets" "$out/c4-page/filter"
"$dapt" report --run "$out/c4-page" --plots "$docs" > /dev/null
fi

# ---------------------------------------------------------------- claim 3
# Every 50th record of the deduplicated corpus is held out (the same kind of
# text, never trained on); the rest is the clean training corpus, and the
# poisoned one is it with a burst of $c3burst documents of random characters
# (ASCII, Latin-1, CJK; seed 7) inserted as one block after training record
# $c3after, both encoded with the same tokenizer. Trained in corpus order
# (data.shuffle: false, nothing held out of the stream) so the burst arrives at
# steps known beforehand (from the shards' document offsets), for fewer steps
# than one epoch (it is met once, and a rollback's skip does not reach the
# epoch's end), at a high learning rate, with the spike detector off and on,
# and the clean corpus with the same settings. Held-out loss on the held-out
# records and on the 40 held-out patents.
c3burst=8; c3chars=400; c3after=2850; c3lr=2e-2; c3steps=70
say ""; say "== claim 3: loss-spike rollback on a poisoned corpus"
python3 - "$out/dedup/kept.jsonl" "$c3burst" "$c3chars" "$c3after" "$out" <<'PY3'
import json, random, sys
source, count, chars, after, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(7)
lines = open(source, encoding="utf-8").read().splitlines()
train = [l for i, l in enumerate(lines) if i % 50 != 25]
held = [l for i, l in enumerate(lines) if i % 50 == 25]
alphabet = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(0xA1, 0x100)] + [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
burst = [json.dumps({"id": f"poison-{i}", "text": "".join(rng.choice(alphabet) for _ in range(chars))}, ensure_ascii=False) for i in range(count)]
for name, records in (("c3-train", train), ("c3-heldout", held), ("c3-poisoned", train[:after] + burst + train[after:])):
    with open(f"{out}/{name}.jsonl", "w", encoding="utf-8") as f: f.write("\n".join(records) + "\n")
PY3
quiet "$dapt" tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/tokenizer.json" --input "$out/c3-train.jsonl" --output "$out/c3-train-tokens"
quiet "$dapt" tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/tokenizer.json" --input "$out/c3-poisoned.jsonl" --output "$out/c3-poisoned-tokens"
c3=(--config configs/pretrain-tiny.yaml --steps $c3steps --set optimizer.lr=$c3lr --set data.shuffle=false --set data.held_out_fraction=0
    --set eval.sequences=0 --set checkpoint.every_steps=0 --set spikes.window=20 --set spikes.snapshot_every_steps=10 --set log_every_steps=1000)
# Where the burst lands: its documents' token offsets in the stream (the shards' .index files), 128 × 8 tokens per step.
c3where=$(python3 - "$out/c3-poisoned-tokens" "$c3after" "$c3burst" $((128 * 8)) <<'PY3'
import glob, json, struct, sys
shards, after, count, per_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lengths = []
for path in sorted(glob.glob(shards + "/shard-*.index")):
    data = open(path, "rb").read()
    offsets = struct.unpack(f"<{len(data) // 8}Q", data)
    lengths += [b - a for a, b in zip(offsets, offsets[1:])]
start = sum(lengths[:after]); end = start + sum(lengths[after:after + count])
total = sum(lengths)
print(f"poisoned corpus: {len(lengths)} records, {total} tokens; {count} random-character records "
      f"after record {after}: tokens {start}..<{end} of the stream, steps {start // per_step + 1}–{(end - 1) // per_step + 1} "
      f"({per_step} tokens per step; one epoch {total // per_step} steps)")
PY3
)
say "$c3where"
run "$dapt" pretrain "${c3[@]}" --input "$out/c3-train-tokens" --set spikes.enabled=true --output "$out/c3-clean" >/dev/null
run "$dapt" pretrain "${c3[@]}" --input "$out/c3-poisoned-tokens" --set spikes.enabled=false --output "$out/c3-off" >/dev/null
run "$dapt" pretrain "${c3[@]}" --input "$out/c3-poisoned-tokens" --set spikes.enabled=true --output "$out/c3-rollback" >/dev/null
run "$dapt" report compare --run clean=$out/c3-clean --run off=$out/c3-off --run rollback=$out/c3-rollback \
  --plot "$docs/claim3-loss.svg" --title "poisoned corpus in corpus order at lr $c3lr: detector off (off) and on (rollback); clean corpus (clean)" | grep -v '^\$ ' > "$out/c3-table.md"
declare -A c3ppl c3own c3rollbacks
for r in clean off rollback; do
  c3own[$r]=$("$dapt" eval ppl --checkpoint "$out/c3-$r" --input "$out/c3-heldout.jsonl" --sequence-length 128 2>>"$out/stderr.txt")
  say "c3 $r: held-out records [eval ppl --checkpoint $out/c3-$r --input $out/c3-heldout.jsonl --sequence-length 128]: ${c3own[$r]}"
  c3ppl[$r]=$("$dapt" eval ppl --checkpoint "$out/c3-$r" --input "$out/heldout.jsonl" --sequence-length 128 2>>"$out/stderr.txt")
  c3rollbacks[$r]=0; [ -f "$out/c3-$r/rollbacks.jsonl" ] && c3rollbacks[$r]=$(wc -l < "$out/c3-$r/rollbacks.jsonl")
  say "c3 $r: held-out patents [eval ppl --checkpoint $out/c3-$r --input $out/heldout.jsonl --sequence-length 128]: ${c3ppl[$r]}; rollbacks.jsonl lines: ${c3rollbacks[$r]}"
done
: > "$out/c3-rollbacks.txt"; [ -f "$out/c3-rollback/rollbacks.jsonl" ] && tee -a "$log" < "$out/c3-rollback/rollbacks.jsonl" > "$out/c3-rollbacks.txt"
# Training loss of the three runs at chosen steps (the rollback run's last line of each step number: its path after any rollback).
python3 - "$out" "$c3steps" > "$out/c3-steps.md" <<'PY3'
import json, sys
out, steps = sys.argv[1], int(sys.argv[2])
runs = {}
for r in ("clean", "off", "rollback"):
    loss = {}
    for line in open(f"{out}/c3-{r}/metrics.jsonl", encoding="utf-8"):
        m = json.loads(line)
        if "event" not in m and m.get("loss") is not None: loss[m["step"]] = m["loss"]
    runs[r] = loss
def mean(r, a, b): xs = [runs[r][s] for s in range(a, b + 1) if s in runs[r]]; return sum(xs) / len(xs)
print("| steps | clean | off | rollback |")
print("| --- | ---: | ---: | ---: |")
for a in range(1, steps + 1, 10):
    b = min(a + 9, steps)
    print(f"| {a}–{b} | {mean('clean', a, b):.4f} | {mean('off', a, b):.4f} | {mean('rollback', a, b):.4f} |")
PY3
# The rollback run's own loss curve with its events, as dapt report draws it.
mkdir -p "$out/c3-page/plots"; ln -sfn "../c3-rollback" "$out/c3-page/pretrain"
"$dapt" report --run "$out/c3-page" --plots "$out/c3-page/plots" > /dev/null
[ -f "$out/c3-page/plots/pretrain-loss.svg" ] && cp "$out/c3-page/plots/pretrain-loss.svg" "$docs/claim3-rollback-run.svg"

if all; then
# ---------------------------------------------------------------- claim 5
# LoRA on the claim-1 model (pretrained with document masks, 120 steps) with
# scripts/run-sample.sh's settings, on the instruction sample without and with
# 150 extra valid-JSON answers; each merged and evaluated by dapt eval json,
# unconstrained and constrained by data/eval/json/schema.json.
say ""; say "== claim 5: JSON validity"
ft=(--config configs/finetune.yaml --model "$out/c1-masks-true" --set schedule.total_steps=120 --set eval.every_steps=40
    --set optimizer.lr=3e-3 --set 'lora.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]')
for data in train train+json; do
  run "$dapt" finetune "${ft[@]}" --input "data/instructions/$data.jsonl" --output "$out/c5-$data-adapter" >/dev/null
  say "c5 $data: final held-out loss of the adapter $(grep -o 'held-out loss [0-9.]*' "$out/stderr.txt" | tail -1 | awk '{print $3}')"
  quiet "$dapt" finetune merge --model "$out/c1-masks-true" --adapter "$out/c5-$data-adapter" --output "$out/c5-$data-model"
  run "$dapt" eval json --model "$out/c5-$data-model" --input data/eval/json/prompts.jsonl \
    --json-schema data/eval/json/schema.json --output "$out/c5-$data-eval"
done
fi

elapsed=$(( $(date -u +%s) - started ))
say ""; say "recipe-report: done in ${elapsed} s; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"

# ---------------------------------------------------------------- the report
# Claim 3's section of the report (also written alone by --only 3).
claim3_section() {
cat <<EOF
## Claim 3: loss-spike rollback

Measured $(date -u +%Y-%m-%d) (dapt at $commit; load average $(cut -d' ' -f1-3 /proc/loadavg) after the runs).
Every 50th record of the deduplicated corpus is held out (the same kind of text, never trained on);
the rest is the clean training corpus. The poisoned corpus is it with a burst of $c3burst documents of
$c3chars random characters each (ASCII, Latin-1 and CJK, seed 7) inserted as one block after training record
$c3after, encoded with the same tokenizer. Trained in corpus order (\`data.shuffle: false\`, \`data.held_out_fraction: 0\`) so the burst
arrives at steps known beforehand, for $c3steps steps (less than one epoch even with a rollback's skip: the burst is met once) at lr $c3lr
(ten times configs/pretrain-tiny.yaml's), with the spike detector off (\`spikes.enabled: false\`) and on
(median + 6 × 1.4826 × MAD of the last 20 accepted losses, 2 steps in a row; rollback points every
10 steps; the data from the rollback point to 10 steps past the detection skipped), and on the
clean corpus with the same settings. The window is 20 steps, not the default 50: in so short a run
50 steps reach back into the fast early descent of the loss, which widens the MAD; in a trial run
with 50 (lr 2e-2, otherwise these settings) the burst's loss of 10.25 stayed under the threshold and
the detector did not fire. Held-out loss is measured afterwards on the held-out records and on the
40 held-out patents of claim 2 (whole patents, a different shape of text), the same for every run.

\`\`\`
$c3where
dapt pretrain ${c3[*]} --input $out/c3-train-tokens --set spikes.enabled=true --output $out/c3-clean
dapt pretrain ${c3[*]} --input $out/c3-poisoned-tokens --set spikes.enabled=false --output $out/c3-off
dapt pretrain ${c3[*]} --input $out/c3-poisoned-tokens --set spikes.enabled=true --output $out/c3-rollback
dapt report compare --run clean=$out/c3-clean --run off=$out/c3-off --run rollback=$out/c3-rollback --plot $docs/claim3-loss.svg
dapt eval ppl --checkpoint $out/c3-RUN --input $out/c3-heldout.jsonl --sequence-length 128
dapt eval ppl --checkpoint $out/c3-RUN --input $out/heldout.jsonl --sequence-length 128
\`\`\`

$(cat "$out/c3-table.md")

| run | rollbacks (lines of rollbacks.jsonl) | held-out records (\`dapt eval ppl\`) | held-out patents |
| --- | ---: | --- | --- |
$(for r in clean off rollback; do echo "| $r | ${c3rollbacks[$r]} | $(awk '{print $1, $2, $3, $4}' <<< "${c3own[$r]}") | $(awk '{print $1, $2, $3, $4}' <<< "${c3ppl[$r]}") |"; done)

Mean training loss by ten steps (metrics.jsonl; for the rollback run the steps of the path it kept):

$(cat "$out/c3-steps.md")

Rollback events of the detector-on run (rollbacks.jsonl):

\`\`\`
$(if [ -s "$out/c3-rollbacks.txt" ]; then cat "$out/c3-rollbacks.txt"; else echo "(none: the detector did not fire)"; fi)
\`\`\`

![training loss of the three runs](recipe-report/claim3-loss.svg)
$([ -f "$docs/claim3-rollback-run.svg" ] && echo "
![the detector-on run's loss curve with its events, as dapt report draws it](recipe-report/claim3-rollback-run.svg)")

The "spikes" column is \`dapt report compare\`'s count over metrics.jsonl with the default detector
settings (window 50), which misses the burst for the reason given above; the rollbacks are the run's own.

$(awk -v on="${c3rollbacks[rollback]}" -v pc="$(awk '{print $4}' <<< "${c3own[clean]}")" \
      -v po="$(awk '{print $4}' <<< "${c3own[off]}")" -v pr="$(awk '{print $4}' <<< "${c3own[rollback]}")" \
      -v qc="$(awk '{print $4}' <<< "${c3ppl[clean]}")" -v qo="$(awk '{print $4}' <<< "${c3ppl[off]}")" -v qr="$(awk '{print $4}' <<< "${c3ppl[rollback]}")" \
      -v burst="$(sed 's/.*steps \([0-9]*\)–.*/\1/' <<< "$c3where")" \
      -v to="$(grep -o '"rolled_back_to":[0-9]*' "$out/c3-rollbacks.txt" | head -1 | cut -d: -f2)" 'BEGIN {
    printf "**Reading.** Held-out loss on the held-out records: %s on the clean corpus, %s poisoned with the detector off, %s poisoned with it on; %s rollback(s) with the detector on. ", pc, po, pr, on
    if (on == 0) { printf "The detector did not fire on this run, so it says nothing for or against rollback at this scale.\n"; exit }
    gapOff = po - pc; gapOn = pr - pc
    printf "Against the clean run the poisoned run ends %+.4f without the detector and %+.4f with it. ", gapOff, gapOn
    if (gapOff > 0 && gapOn < gapOff && gapOn <= 0.25 * gapOff) printf "For the claim at this scale: the rollback removed most of the damage the burst did. "
    else if (gapOn < gapOff) printf "The rollback run ends closer to the clean run, but not within a small margin of it. "
    else printf "Not for the claim at this scale: the rollback run does not end closer to the clean run. "
    if (to != "" && burst + 0 <= to + 0) printf "The rollback point (after step %d) had already trained on the burst'"'"'s first tokens (step %d holds them with clean text, and its loss stayed under the threshold); the rollback removes the rest. ", to, burst
    hi = qc; lo = qc; if (qo > hi) hi = qo; if (qr > hi) hi = qr; if (qo < lo) lo = qo; if (qr < lo) lo = qr
    printf "On the held-out patents (whole patents joined from their fragments, claim 2'"'"'s text) the three runs end at %s, %s and %s (a spread of %.4f)", qc, qo, qr, hi - lo
    if (hi - lo < gapOff / 2) printf ", less than half the gap on the held-out records: that measure does not separate them here.\n"; else printf ".\n"
  }')
EOF
}
num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
c4row() {  # variant
  local r="$out/c4-$1/report.json" q="$out/c4-$1-quality.txt"
  echo "| $1 | $(num "$r" perplexity_before) | $(num "$r" perplexity_after) | $(num "$r" kept) | $(( $(num "$r" removed_high) + $(num "$r" removed_low) )) | $(grep -o 'clean *kept [0-9.]* ([0-9/]*)' "$q" | sed 's/clean *kept //') | $(grep -o 'precision of removal (noise among removed) [0-9.]*' "$q" | awk '{print $NF}') |"
}
if ! all; then
  claim3_section > "$out/c3-section.md"
  python3 - "$md" "$out/c3-section.md" <<'PY'
import sys
md, section = sys.argv[1], sys.argv[2]
text = open(md, encoding="utf-8").read()
new = open(section, encoding="utf-8").read().rstrip("\n") + "\n\n"
a, b = text.index("## Claim 3:"), text.index("## Claim 4:")
open(md, "w", encoding="utf-8").write(text[:a] + new + text[b:])
PY
  echo "recipe-report: replaced claim 3 in $md"
  exit 0
fi
{
cat <<EOF
# Recipe report: the write-up's claims, measured on dapt's own small runs

Regenerated by \`scripts/recipe-report.sh\` on $(date -u +%Y-%m-%d) (dapt at $commit; $machine; ${elapsed} s in all).
Every figure below is one the script printed; its whole log is \`out/recipe/log.txt\` after a run.
Seeds: model init 1234, data order 42 (configs/pretrain-tiny.yaml), noise injection 7.

**What runs this small can and cannot show.** The model has 1.3M parameters and trains for
100–150 steps on about 60k tokens of partly generated, formulaic patent text, on 2 CPU cores. Such
runs show whether a mechanism works end to end and the direction of large effects on this data. They
cannot show how an effect scales with model size, data or steps, and differences of a few percent are
within the noise of a single seed (each configuration here ran once). Treat every "for" or "against"
below as evidence at this scale only.

## Data

Hand-written sample (\`data/sample/\`) and the first 600 generated patents (\`data/corpus/\`) through
\`prepare\` and \`dedup\`, a 2048-token BPE, and packed token shards; the last 40 generated patents are held out
whole for claim 2. Counts as \`dapt report\` read them back:

\`\`\`
$(grep '^data:' "$log" | sed 's/^data: //; s/;/\n/g')
\`\`\`

## Claim 1: block-diagonal document masks remove loss spikes on long packed samples

The same run (configs/pretrain-tiny.yaml, 120 steps, sequences of 256 tokens, 8 per step, lr 2e-3)
with \`data.document_masks: true\` and \`false\`. Without masks a sequence is one causal block with
positions running through it; the tokens and targets are the same, and held-out evaluation is
document-masked in both. Spikes are counted by pretrain's own detector (\`SpikeDetector\`: a loss above
median + 6 × 1.4826 × MAD of the last 50 accepted losses, 2 steps in a row, after 20 steps), run by
\`dapt report compare\` over each run's metrics.jsonl (the runs themselves had \`spikes.enabled: false\`,
so no rollback changed them).

\`\`\`
$(for m in true false; do echo "dapt pretrain ${c1[*]} --set data.document_masks=$m --output $out/c1-masks-$m"; done)
dapt report compare --run masks=$out/c1-masks-true --run no-masks=$out/c1-masks-false --plot $docs/claim1-loss.svg
\`\`\`

$(cat "$out/c1-table.md")

![training and held-out loss with and without document masks](recipe-report/claim1-loss.svg)

$(awk -F'|' 'NR > 2 { gsub(/ /, "", $2); spikes[$2] = $4; ppl[$2] = $7; train[$2] = $5 }
  END {
    gsub(/^ +| +$/, "", spikes["masks"]); gsub(/^ +| +$/, "", spikes["no-masks"])
    printf "**Reading.** Spikes: %s with masks, %s without. ", spikes["masks"], spikes["no-masks"]
    if (spikes["masks"] == "0" && spikes["no-masks"] == "0")
      printf "Neither run spiked, so this run can say nothing for or against the spike part of the claim at this scale. "
    printf "Last training loss %s with masks and %s without, final held-out perplexity %s and %s. ", train["masks"], train["no-masks"], ppl["masks"], ppl["no-masks"]
    printf "Part of the held-out gap is a mismatch of protocol (the unmasked model is evaluated per document, with positions restarting, as it was not trained), "
    printf "but the training loss, measured on each run'"'"'s own packing, differs in the same direction.\n"
  }' "$out/c1-table.md")

## Claim 2: RoPE scaling plus a length curriculum fixes the PPL jump when stretching the context

A model trained at L = $L positions (\`max_position_embeddings: $L\`, 150 steps of 16 sequences), evaluated on the 40 held-out
patents (each patent's prepared fragments joined into one document, about 200 tokens) at L and at 4L = $L4 with each way of stretching RoPE, set on
\`dapt eval ppl\` (\`--set rope_scaling.rope_type=… --set rope_scaling.factor=4\`, \`--set rope_theta=…\`;
"none" evaluates plain RoPE past the trained positions with \`--set max_position_embeddings=$L4\`). This is
context extension without any training at the new length.

\`\`\`
dapt pretrain --config configs/pretrain-tiny.yaml --input $out/tokens --output $out/c2-base --steps 150 --set data.sequence_length=$L --set model.max_position_embeddings=$L --set data.global_batch_size=16
dapt eval ppl --checkpoint $out/c2-base --input $out/heldout.jsonl --sequence-length N [--set …]
\`\`\`

| RoPE at evaluation | held-out ppl at L = $L | held-out ppl at 4L = $L4 | 4L ÷ L |
| --- | ---: | ---: | ---: |
$(for i in "${!rows[@]}"; do echo "| ${rows[$i]} | ${at[$i,L]} | ${at[$i,4L]} | $(awk -v a="${at[$i,4L]}" -v b="${at[$i,L]}" 'BEGIN{printf "%.3f", a/b}') |"; done)

$(for i in "${!rows[@]}"; do echo "${rows[$i]}|${at[$i,L]}|${at[$i,4L]}"; done | awk -F'|' '
  NR == 1 { none = $3 / $2; none4 = $3 }
  { ratio[NR] = $3 / $2; name[NR] = $1; at4[NR] = $3 }
  END {
    n = NR - 1
    printf "**Reading.** Plain RoPE past the trained positions raises held-out perplexity by a factor of %.3f from L to 4L. ", none
    better = ""
    for (i = 2; i <= n; i++) if (ratio[i] < none) better = better (better == "" ? "" : ", ") sprintf("%s (%.3f)", name[i], ratio[i])
    if (better == "") printf "No scaling applied at evaluation alone narrows that jump here. "
    else printf "Scalings with a smaller jump: %s. ", better
    removed = 0
    for (i = 2; i <= n; i++) if (ratio[i] <= 1) removed = 1
    if (!removed) printf "Applied at evaluation alone, none of them removes the jump at this scale. "
    else printf "At least one scaling removes the jump without any training at the longer length. "
    printf "After the curriculum the model has held-out perplexity %.4g at 4L (%.3f × its own at L), against %.4g for plain RoPE on the first model: ", at4[NR], ratio[NR], none4
    if (at4[NR] < none4 && ratio[NR] < none) printf "for the claim at this scale (though the curriculum model also trained at 4L, which the others did not).\n"
    else printf "not for the claim at this scale.\n"
  }')

The last row is a second model, trained from the same start for the same 150 steps and tokens with
\`pretrain.curriculum\`: 50 steps at $L, 50 at $((2 * L)) with YaRN ×2, 50 at $L4 with YaRN ×4 (both over the original $L
positions); its checkpoint keeps the last stage's RoPE and is evaluated as saved:

\`\`\`
dapt pretrain … --output $out/c2-curriculum --set "curriculum=$curriculum"
\`\`\`

A caveat that applies to the whole table: training is document-masked and packs prepared fragments of
a few dozen tokens, and positions restart at each document, so training (even the curriculum's 4L stage) sees few positions near L, let alone past it.
A fair test needs training documents longer than 4L (whole patents, or \`data.document_masks: false\`).

$(claim3_section)

## Claim 4: perplexity filtering per length bucket lowers corpus perplexity without losing clean text

600 clean records of the deduplicated sample and 150 records of injected noise (30 each of random bytes,
shuffled characters, mojibake, digit debris and boilerplate; \`scripts/bench/filter_noise.py make\`), scored
under a reference model pretrained for 100 steps on 1100 other clean records (its own 1024-token BPE), and
cut by configs/filter.yaml (per length bucket and language: above the 95th and below the 2nd percentile),
once with its 4 length buckets and once with \`--set buckets=1\`.

\`\`\`
dapt filter --config configs/filter.yaml --input $out/c4-eval.jsonl --model $out/c4-ref --output $out/c4-buckets [--set buckets=1]
python3 scripts/bench/filter_noise.py quality $out/c4-buckets
\`\`\`

| cut | corpus ppl before | after | kept | removed | clean kept | noise among removed |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
$(c4row buckets)
$(c4row one-bucket)

$(awk -F'|' 'NR == 1 { b = $0 } NR == 2 { o = $0 } END {
    split(b, x, "|"); split(o, y, "|")
    printf "**Reading.** Both cuts lower corpus perplexity (%s → %s per length bucket, → %s with one bucket). ", x[3], x[4], y[4]
    printf "Per length bucket the quantile cuts remove the same share of every bucket whether it holds noise or not: clean kept %s, noise among removed %s; ", x[7], x[8]
    printf "with one bucket: clean kept %s, noise among removed %s. ", y[7], y[8]
    if (x[7] + 0 < y[7] + 0) printf "Here bucketing kept less clean text than one bucket, so the claim is not borne out on this corpus: a quantile cut takes the same share of every bucket, so a bucket with little noise loses clean records while a noisier one keeps part of its noise. Cuts by perplexity value (\`max_perplexity\` rules) are the other setting to try.\n"
    else printf "Here bucketing kept at least as much clean text as one bucket, as the claim says.\n"
  }' <<< "$(c4row buckets)
$(c4row one-bucket)")

Removal by noise kind (per length bucket):

\`\`\`
$(cat "$out/c4-buckets-quality.txt")
\`\`\`

Removal by noise kind (one bucket):

\`\`\`
$(cat "$out/c4-one-bucket-quality.txt")
\`\`\`

What was cut, per bucket and language (per length bucket; from report.json):

| bucket | lang | tokens | records | high cut (ppl) | removed high | low cut (ppl) | removed low | ppl before → after |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |
$(python3 - "$out/c4-buckets/report.json" <<'PY'
import json, sys
for g in json.load(open(sys.argv[1]))["groups"]:
    upper = g["tokens_below"]
    span = f'{g["tokens_from"]}–{upper - 1}' if upper is not None else f'{g["tokens_from"]}+'
    print(f'| {g["bucket"]} | {g["lang"]} | {span} | {g["count"]} | {g["threshold_high"]} | {g["removed_high"]} | {g["threshold_low"]} | {g["removed_low"]} | {g["perplexity_before"]} → {g["perplexity_after"]} |')
PY
)

Examples of removed records (the highest- and lowest-perplexity of each reason, text cut to 80 characters):

\`\`\`
$(python3 - "$out/c4-buckets/removed.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
for reason in ("high", "low"):
    chosen = sorted((r for r in rows if r["reason"] == reason), key=lambda r: -r["ppl"])
    for r in chosen[:3] + chosen[-2:]:
        text = r["text"].replace("\n", " ")[:80]
        print(f'{reason:4s} ppl {r["ppl"]:>9.2f}  bucket {r["bucket"]}  {r["kind"]:12s}  {text}')
PY
)
\`\`\`

Histograms of log-perplexity per group with the cuts (per length bucket):

$(for f in "$docs"/filter-bucket*.svg; do echo "![$(basename "$f" .svg)](recipe-report/$(basename "$f"))"; done)

## Claim 5: JSON validity

LoRA (r 8, all seven projections, lr 3e-3, 120 steps of 8 sequences of 256 tokens, as in
scripts/run-sample.sh) on the claim-1 model with document masks, trained on the instruction sample
(\`data/instructions/train.jsonl\`, 453 examples) and on the same plus 150 extra requests answered in
valid JSON of other shapes (\`train+json.jsonl\`); each adapter merged into the base and evaluated on the
24 prompts of \`data/eval/json\`, greedy, unconstrained and constrained by its schema. Final held-out loss
of the adapters (assistant tokens of \`data/instructions/heldout.jsonl\`): $(grep '^c5 ' "$log" | sed 's/^c5 //; s/: final held-out loss of the adapter / /' | paste -sd ';' - | sed 's/;/, /g').

\`\`\`
dapt finetune ${ft[*]} --input data/instructions/DATA.jsonl --output $out/c5-DATA-adapter
dapt finetune merge --model $out/c1-masks-true --adapter $out/c5-DATA-adapter --output $out/c5-DATA-model
dapt eval json --model $out/c5-DATA-model --input data/eval/json/prompts.jsonl --json-schema data/eval/json/schema.json --output $out/c5-DATA-eval
\`\`\`

| training data | decoding | JSON valid | schema valid | field accuracy |
| --- | --- | ---: | ---: | ---: |
$(python3 - "$out" <<'PY5'
import json, sys
for data in ("train", "train+json"):
    res = json.load(open(f"{sys.argv[1]}/c5-{data}-eval/report.json"))["sections"]["json"]["results"]
    for mode in ("unconstrained", "constrained"):
        r = res[mode]
        print(f'| {data} | {mode} | {r["json_valid"]}/{r["records"]} ({r["json_valid_rate"]:.3f}) | {r["schema_valid"]}/{r["records"]} ({r["schema_valid_rate"]:.3f}) | {r["fields_correct"]}/{r["fields_total"]} ({r["field_accuracy"]:.3f}) |')
PY5
)

$(python3 - "$out" <<'PY5'
import json, sys
r = {d: json.load(open(f"{sys.argv[1]}/c5-{d}-eval/report.json"))["sections"]["json"]["results"] for d in ("train", "train+json")}
u, uj = r["train"]["unconstrained"], r["train+json"]["unconstrained"]
c, cj = r["train"]["constrained"], r["train+json"]["constrained"]
verdict = ("higher with" if uj["json_valid_rate"] > u["json_valid_rate"] else
           "lower with" if uj["json_valid_rate"] < u["json_valid_rate"] else "the same with and without")
print(f'**Reading.** Unconstrained JSON validity is {u["json_valid_rate"]:.3f} without the extra valid-JSON answers and '
      f'{uj["json_valid_rate"]:.3f} with them ({verdict} them); constrained decoding gives {c["json_valid_rate"]:.3f} and '
      f'{cj["json_valid_rate"]:.3f} JSON validity and {c["schema_valid_rate"]:.3f} and {cj["schema_valid_rate"]:.3f} schema validity, '
      f'by construction of the constraint, and field accuracy {c["field_accuracy"]:.3f} and {cj["field_accuracy"]:.3f} '
      f'(unconstrained {u["field_accuracy"]:.3f} and {uj["field_accuracy"]:.3f}): the constraint fixes the form, not the content. '
      f'Unconstrained answers that ran to the token limit: {u["finish_reasons"].get("length", 0)} and {uj["finish_reasons"].get("length", 0)} of 24 '
      f'(the answers in json.items.jsonl start as JSON and fall into repetition). '
      f'Each configuration ran once on 24 prompts, so one answer is 0.042 of a rate.')
PY5
)
EOF
} > "$md"
echo "recipe-report: wrote $md and $docs/"
