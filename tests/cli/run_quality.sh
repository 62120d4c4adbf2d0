#!/usr/bin/env bash
# run_quality.sh: quality of loading a published KV cache after a prefix, on stories260K (real
# trained weights; its embedded vocabulary is not its training one, so we judge by logits, not
# text). 10 documents x prefixes of 0, 16 and 64 tokens through `kvfetch compare`: exactness is
# asserted at 0 (lossless codec, placed right after BOS); KL and greedy agreement are recorded
# for 16 and 64 (the re-rotation approximation) in $BUILD/quality.txt and printed here. Then the
# invariants of --recompute and of declared contexts (exactness where it must hold). The full
# quality benchmark with baselines is `make bench` (BENCH=quality), docs/quality.md.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init run-quality
SHARED=${KVPUB_SHARED:-../shared}
MODEL="$SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || fail "$MODEL missing (set KVPUB_SHARED)"
export KVPUB_CACHE_DIR="$tmp/cache"
N=16

"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
mkdir -p "$tmp/trust" "$tmp/docs"; cp "$tmp/pub.pub" "$tmp/trust/"
# 10 documents of varied text, 300 bytes each (~300 tokens: this vocabulary is nearly one token
# per byte and the model's context is 512)
i=0
for spec in GPL-3:0 GPL-3:9000 Apache-2.0:0 Apache-2.0:7000 MPL-2.0:3000 Artistic:1000 \
            BSD:200 GFDL-1.3:12000 LGPL-2.1:5000 CC0-1.0:2000; do
  f=${spec%%:*}; off=${spec##*:}; i=$((i + 1))
  tail -c +$((off + 1)) "/usr/share/common-licenses/$f" | head -c 300 | tr -s ' \n' ' ' >"$tmp/docs/doc$i.txt"
done
"$BUILD/kvpubd" publish --store "$tmp/store" --model "$MODEL" --key "$tmp/pub.key" --threads 2 \
  --json "$tmp"/docs/doc*.txt >"$tmp/publish.json" || fail "publish"

# prefixes of exactly 16 and 64 tokens: this tokenizer gives one token per
# '|' plus a leading space token (no merges); the compare output's prefix_tokens checks it
bars='|||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||||'
p16=${bars:0:15}
p64=${bars:0:63}

num() { sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}\$/\1/p" "$tmp/out" | head -1; }
out="$BUILD/quality.txt"
{
  echo "# kvfetch compare on stories260K: loaded blob (f16-zstd, lossless) after a prefix vs full prefill"
  echo "# $N greedy positions, teacher-forced with the loaded path's tokens; KL(full || loaded) in nats"
  printf '%-6s %6s %6s %12s %12s %8s %7s %9s\n' doc tokens prefix kl_mean kl_max argmax greedy bit_exact
} >"$out"
for i in $(seq 10); do
  id=$(grep -o "\"file\": *\"[^\"]*doc$i.txt\", *\"id\": *\"[0-9a-f]*\"" "$tmp/publish.json" | grep -o '[0-9a-f]\{64\}')
  blob=$(ls "$tmp"/store/blobs/*/"$id") || fail "doc$i: no published blob"
  for pfx in "" "$p16" "$p64"; do
    expect_rc 0 "$KVFETCH" compare --model "$MODEL" --blob "$blob" --trust "$tmp/trust" --threads 2 \
      --prefix "$pfx" --prompt " The little dog said" -n $N --json
    np=$(num prefix_tokens)
    want=$([ -z "$pfx" ] && echo 0 || echo $(( ${#pfx} + 1 )))
    [ "$np" = "$want" ] || fail "prefix tokenized to $np tokens, want $want"
    bit=$(num bit_identical); agree=$(num greedy_outputs_agree)
    printf '%-6s %6s %6s %12.4g %12.4g %5s/%-2s %7s %9s\n' "doc$i" "$(grep -m1 '"tokens":' "$tmp/out" | tr -dc 0-9)" \
      "$np" "$(num kl_mean)" "$(num kl_max)" "$(num argmax_agree)" "$(num positions)" "$agree" "$bit" >>"$out"
    if [ -z "$pfx" ]; then
      [ "$bit" = true ] || fail "doc$i: loaded right after BOS is not bit-identical: $(cat "$tmp/out")"
      # without recompute BOS is evaluated in the prompt's pass (eng_prefill_held)
      [ "$(num prefix_with_suffix)" = true ] || fail "doc$i: BOS was not held for the prompt's pass"
      [ "$(num kl_max)" = "0.0" ] || fail "doc$i: KL $(num kl_max) at prefix 0"
    fi
  done
done
awk 'NR > 3 && $3 > 0 { n[$3]++; s[$3] += $4; if ($4 > m[$3]) m[$3] = $4; g[$3] += ($7 == "true") }
     END { for (p in n) printf "# prefix %s: mean KL %.4g, worst mean KL %.4g, greedy agreement %d/%d documents\n", p, s[p]/n[p], m[p], g[p], n[p] }' \
  "$out" | sort -n -k3 >>"$out"
cat "$out"

# what must always hold, whatever the quality: recomputing every token of the document is a full
# prefill of it (bit-identical), recomputing when the blob sits exactly where it was made changes
# nothing, and a declared context that matches the prefix is exact (also for two documents: the
# second sees the first)
id1=$(grep -o '"id": *"[0-9a-f]*"' "$tmp/publish.json" | head -1 | grep -o '[0-9a-f]\{64\}')
blob1=$(ls "$tmp"/store/blobs/*/"$id1")
head -c 100 "$tmp/docs/doc3.txt" >"$tmp/short3.txt"
head -c 100 "$tmp/docs/doc4.txt" >"$tmp/short4.txt"
"$BUILD/kvpubd" publish --store "$tmp/store" --model "$MODEL" --key "$tmp/pub.key" --threads 2 --json \
  "$tmp/short3.txt" "$tmp/short4.txt" >"$tmp/short.json" || fail "publish short documents"
blob2=$(ls "$tmp"/store/blobs/*/"$(jq -r '.documents[0].id' "$tmp/short.json")")
blob3=$(ls "$tmp"/store/blobs/*/"$(jq -r '.documents[1].id' "$tmp/short.json")")
CQ=("$KVFETCH" compare --model "$MODEL" --trust "$tmp/trust" --threads 2 --prompt " The little dog said" -n $N --json)
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p16" --recompute 1
[ "$(num bit_identical)" = true ] || fail "--recompute 1 is not a full prefill: $(cat "$tmp/out")"
[ "$(num prefix_with_suffix)" = false ] || fail "recomputed tokens must see a prefix prefilled first"
expect_rc 0 "${CQ[@]}" --blob "$blob2" --blob "$blob3" --prefix "$p64" --recompute 1
[ "$(num bit_identical)" = true ] || fail "--recompute 1 with two documents: $(cat "$tmp/out")"
expect_rc 0 "${CQ[@]}" --blob "$blob1" --recompute 0.3
[ "$(num bit_identical)" = true ] || fail "--recompute after BOS changed an exact load: $(cat "$tmp/out")"
[ "$(jq -r '.blobs[0].recomputed_tokens' "$tmp/out")" = 0 ] || fail "an exact load recomputed tokens"
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p16" --recompute 0.25
n1=$(jq -r '.blobs[0].tokens' "$tmp/out")
[ "$(jq -r '.blobs[0].recomputed_tokens' "$tmp/out")" = $(( (n1 + 3) / 4 )) ] || fail "--recompute 0.25 of $n1 tokens"
expect_rc 2 "${CQ[@]}" --blob "$blob1" --recompute 1.5
expect_err "--recompute '1.5' is not a fraction"
# the same invariants with CacheBlend's selection; its kept count is ceil(R * tokens) too
BL=(--recompute-method blend)
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p16" --recompute 1 "${BL[@]}"
[ "$(num bit_identical)" = true ] || fail "--recompute 1 (blend) is not a full prefill: $(cat "$tmp/out")"
expect_rc 0 "${CQ[@]}" --blob "$blob2" --blob "$blob3" --prefix "$p64" --recompute 1 "${BL[@]}"
[ "$(num bit_identical)" = true ] || fail "--recompute 1 (blend) with two documents: $(cat "$tmp/out")"
expect_rc 0 "${CQ[@]}" --blob "$blob1" --recompute 0.3 "${BL[@]}"
[ "$(num bit_identical)" = true ] || fail "blend after BOS changed an exact load: $(cat "$tmp/out")"
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p16" --recompute 0.25 "${BL[@]}"
[ "$(jq -r '.blobs[0].recomputed_tokens' "$tmp/out")" = $(( (n1 + 3) / 4 )) ] || fail "blend 0.25 of $n1 tokens"
kl_bl=$(num kl_mean)
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p16"
kl_rr=$(num kl_mean)
awk -v a="$kl_bl" -v b="$kl_rr" 'BEGIN { exit !(a < b) }' || fail "blend 0.25 KL $kl_bl is not below re-rotation's $kl_rr"
expect_rc 2 "${CQ[@]}" --blob "$blob1" --recompute-method cacheblend
expect_err "--recompute-method 'cacheblend' is not head or blend"
# --follow full feeds both paths the full prefill's tokens: up to the first disagreement the
# positions are the same as with the loaded path leading, and so are their KLs
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p64"
jq -c '[.first_disagreement, .kl]' "$tmp/out" >"$tmp/lead-loaded"
expect_rc 0 "${CQ[@]}" --blob "$blob1" --prefix "$p64" --follow full
[ "$(jq -r .method "$tmp/out")" = "teacher-forced with the full path's greedy tokens" ] || fail "--follow full: method"
jq -c '[.first_disagreement, .kl]' "$tmp/out" >"$tmp/lead-full"
python3 - "$tmp/lead-loaded" "$tmp/lead-full" <<'PY' || fail "--follow full and loaded disagree before the first difference"
import json, sys
(fa, ka), (fb, kb) = (json.load(open(p)) for p in sys.argv[1:])
assert fa == fb, (fa, fb)
upto = fa + 1 if fa >= 0 else len(ka)
assert ka[:upto] == kb[:upto], (ka[:upto], kb[:upto])
PY
expect_rc 0 "${CQ[@]}" --blob "$blob1" --follow full
[ "$(num bit_identical)" = true ] || fail "--follow full right after BOS is not bit-identical"
expect_rc 2 "${CQ[@]}" --blob "$blob1" --follow both
expect_err "--follow 'both' is not full or loaded"
"$BUILD/kvpubd" publish --store "$tmp/store" --model "$MODEL" --key "$tmp/pub.key" --threads 2 --json \
  --context "$p16" "$tmp/docs/doc1.txt" >"$tmp/ctx.json" || fail "publish --context"
cblob=$(ls "$tmp"/store/blobs/*/"$(jq -r '.documents[0].id' "$tmp/ctx.json")")
expect_rc 0 "${CQ[@]}" --blob "$cblob" --prefix "$p16"
[ "$(num bit_identical)" = true ] || fail "a matching declared context is not exact: $(cat "$tmp/out")"
[ "$(num prefix_with_suffix)" = true ] || fail "the prefix was not held for the prompt's pass"
echo PASS
