# t96-origin.sh - one model identity travels with every embedding stream (cmr-encode's
# provenance: model.id, model.towers) and into index files; cmr-eval, cmr-index and cmr-query
# refuse embeddings of two models, naming both, unless --force; a tuning that leaves a tower
# alone agrees with its base on that tower; swapped cmr-eval arguments get a hint.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip

"$MK" model "$WORK/A" tiny --seed 1
"$MK" model "$WORK/B" tiny --seed 2
"$MK" images 8 32 3 >"$WORK/i.cmr"
"$MK" tokens 8 4 >"$WORK/t.cmr"
for m in A B; do
	cmr-encode -m "$WORK/$m" -o "$WORK/${m}i.cmr" "$WORK/i.cmr"
	cmr-encode -m "$WORK/$m" -o "$WORK/${m}t.cmr" "$WORK/t.cmr"
done
id() { cmr-dump meta "$1" | tail -1 | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p'; }

begin "image and text embeddings of one model carry one identity over both towers; another model's differs"
run cmr-dump meta "$WORK/Ai.cmr"
expect_stdout_has '"tower":"vision"'
expect_stdout_has '"towers":{"vision":"'
a_i=$(id "$WORK/Ai.cmr") a_t=$(id "$WORK/At.cmr") b_t=$(id "$WORK/Bt.cmr")
[ ${#a_i} -eq 16 ] || why "no 16-digit model.id: '$a_i'"
[ "$a_i" = "$a_t" ] || why "image and text embeddings of A have ids $a_i and $a_t"
[ "$a_t" != "$b_t" ] || why "A and B have one id $a_t"
end

begin "a model's identity is a function of its config and tensors alone: mkclip's tiny model (seed 1) has the recorded one in every build (make check, make check-asan)"
# recorded 2026-12-01; it changes only when the model, mkclip's generator or the hashing does
[ "$a_i" = f0b2e705be7ec4ea ] || why "model.id is $a_i, recorded f0b2e705be7ec4ea"
run cmr-dump meta "$WORK/Ai.cmr"
expect_stdout_has '"towers":{"vision":"41336a6597246ec3","text":"2b4eb71b4fd83219"}'
end

begin "cmr-eval: images of A with texts of B are refused, naming both models; --force warns and evaluates"
run cmr-eval "$WORK/Ai.cmr" "$WORK/Bt.cmr"
expect_status 1
expect_stderr_has "Ai.cmr holds image embeddings of A (model $a_i), but $WORK/Bt.cmr text embeddings of B (model $b_t): not one model"
expect_stderr_has "hint: encode both with the same model (and tuning), or give --force"
expect_stdout_empty
run cmr-eval --force "$WORK/Ai.cmr" "$WORK/Bt.cmr"
expect_status 0
expect_stderr_has "warning: $WORK/Ai.cmr holds image embeddings of A"
expect_stdout_has "image->text"
run cmr-eval "$WORK/Ai.cmr" "$WORK/At.cmr"
expect_status 0
expect_stderr_empty
end

begin "cmr-eval: the two streams swapped get a hint to swap them"
run cmr-eval "$WORK/At.cmr" "$WORK/Ai.cmr"
expect_status 1
expect_stderr_has "At.cmr holds text embeddings and $WORK/Ai.cmr image embeddings"
expect_stderr_has "hint: give the images first: cmr-eval $WORK/Ai.cmr $WORK/At.cmr"
end

begin "cmr-index keeps the streams' models and provenance; info lists the models"
run cmr-index -o "$WORK/a.idx" "$WORK/Ai.cmr" "$WORK/At.cmr"
expect_status 0
run cmr-index info "$WORK/a.idx"
expect_stdout_has "model    image embeddings of A (model $a_i)"
expect_stdout_has "model    text embeddings of A (model $a_i)"
expect_stdout_has '"history":[{"tool":"cmr-encode"'
run cmr-index info --json "$WORK/a.idx"
expect_status 0
expect_stdout_has '"vectors": 16,'
expect_stdout_has "\"text embeddings of A (model $a_i)\""
expect_stdout_has '"tool": "cmr-index",'
end

begin "cmr-index refuses to mix: in one build, in add, in merge, and a quantizer of another model"
run_sh "cat '$WORK/Ai.cmr' '$WORK/Bi.cmr' | cmr-index -o '$WORK/x.idx'"
expect_status 1
expect_stderr_has "(stdin) holds image embeddings of A (model $a_i), but (stdin) image embeddings of B"
run cmr-index add -o "$WORK/x.idx" "$WORK/a.idx" "$WORK/Bi.cmr"
expect_status 1
expect_stderr_has "a.idx holds image embeddings of A (model $a_i), but $WORK/Bi.cmr image embeddings of B"
cmr-index -o "$WORK/b.idx" "$WORK/Bi.cmr"
run cmr-index merge -o "$WORK/x.idx" "$WORK/a.idx" "$WORK/b.idx"
expect_status 1
expect_stderr_has "but $WORK/b.idx image embeddings of B (model $b_t)"
cmr-index --ivf 2 --train-only -o "$WORK/q.idx" "$WORK/Bi.cmr"
run cmr-index --quantizer "$WORK/q.idx" -o "$WORK/x.idx" "$WORK/Ai.cmr"
expect_status 1
expect_stderr_has "q.idx image embeddings of B"
expect_no_file "$WORK/x.idx"
run cmr-index merge --force -o "$WORK/x.idx" "$WORK/a.idx" "$WORK/b.idx"
expect_status 0
expect_stderr_has "(going on: --force)"
run cmr-index info "$WORK/x.idx"
expect_stdout_has "image embeddings of B (model $b_t)"
end

begin "cmr-query refuses queries of another model; the hit stream carries the queries' provenance"
run cmr-query "$WORK/a.idx" "$WORK/Bt.cmr"
expect_status 1
expect_stderr_has "a.idx holds image embeddings of A (model $a_i), but $WORK/Bt.cmr text embeddings of B (model $b_t)"
expect_stdout_empty
run_sh "cmr-query -f stream '$WORK/a.idx' '$WORK/At.cmr' | cmr-dump meta"
expect_status 0
head -1 "$OUT" | grep -q '"tool":"cmr-encode"' || why "the queries' provenance is not first: $(head -c 200 "$OUT")"
tail -1 "$OUT" | grep -q '"tool":"cmr-query"' || why "cmr-query's provenance is not last"
run cmr-query --force "$WORK/a.idx" "$WORK/Bt.cmr"
expect_status 0
expect_stderr_has "warning:"
end

begin "a vision-prompt tuning: its images agree with the base's texts, and not with another model's"
cmr-train -q -t 1 -m "$WORK/A" -o "$WORK/vis" -b 8 --steps 2 --lr 1e-2 --vision-prompts 2 "$WORK/i.cmr" "$WORK/t.cmr"
cmr-encode -m "$WORK/A" --tuning "$WORK/vis" -o "$WORK/Vi.cmr" "$WORK/i.cmr"
cmr-encode -m "$WORK/A" --tuning "$WORK/vis" -o "$WORK/Vt.cmr" "$WORK/t.cmr"
v_i=$(id "$WORK/Vi.cmr")
[ "$v_i" != "$a_i" ] && [ ${#v_i} -eq 16 ] || why "the tuned model's id is '$v_i', the base's $a_i"
[ "$v_i" = "$(id "$WORK/Vt.cmr")" ] || why "the tuned model's text embeddings carry another id"
cmp -s "$WORK/At.cmr" "$WORK/Vt.cmr" && why "text streams identical though provenance should differ"
run cmr-eval "$WORK/Vi.cmr" "$WORK/At.cmr"
expect_status 0
expect_stderr_empty
run cmr-eval "$WORK/Vi.cmr" "$WORK/Bt.cmr"
expect_status 1
expect_stderr_has "image embeddings of A + tuning $WORK/vis (model $v_i)"
run cmr-eval "$WORK/Ai.cmr" "$WORK/Vi.cmr"
expect_status 1
end

begin "embeddings with no model in their provenance (imported) are not checked"
cmr-dump to-npy -o "$WORK/b.npy" "$WORK/Bt.cmr"
seq 8 >"$WORK/keys.txt"
cmr-dump from-npy --kind embedding --keys "$WORK/keys.txt" "$WORK/b.npy" >"$WORK/imp.cmr"
run cmr-query "$WORK/a.idx" "$WORK/imp.cmr"
expect_status 0
expect_stderr_empty
[ "$(wc -l <"$OUT")" -eq 80 ] || why "expected 8 queries x 10 hits: $(wc -l <"$OUT") lines"
end
