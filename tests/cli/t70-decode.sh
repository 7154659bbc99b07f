# t70-decode.sh - cmr-decode: formats, colour spaces, orientation, order, modes, bad input;
# with ../shared: every real archive, and pixels against PIL's reference.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkjpeg
J=$WORK/jpegs
mkdir -p "$J"
for k in rgb progressive gray cmyk exif6 marked; do "$MK" $k 64 32 "$J/$k.jpg"; done
"$MK" rgb 300 200 "$J/big.jpg"

begin "a directory decodes in sorted order, keys without extension"
run_sh "cmr-decode -s 32 '$J' | cmr-dump list -H"
expect_status 0
awk '$2 != 0 {print $NF}' "$OUT" | tr '\n' ' ' >"$WORK/keys"
[ "$(cat "$WORK/keys")" = "big cmyk exif6 gray marked progressive rgb " ] || why "keys: $(cat "$WORK/keys")"
expect_stdout_has "image       u8    [32,32,3]"
end

begin "grayscale is replicated to RGB, CMYK (Adobe) is converted as PIL does"
run_sh "cmr-decode --resize none '$J/gray.jpg' '$J/cmyk.jpg' | cmr-dump show -a"
expect_status 0
awk '/^gray/{g=1;next} /^cmyk/{g=0;c=1;next} g && NF==3 && !($1==$2 && $2==$3){bad=1} c && NF==3 && $0!="255 0 0"{bad=1} END{exit bad}' "$OUT" ||
	why "channels differ: $(head -c 200 "$OUT")"
end

begin "progressive JPEG decodes to the same pixels as baseline"
cmr-decode --resize none "$J/rgb.jpg" >"$WORK/a.cmr"
cmr-decode --resize none "$J/progressive.jpg" | cmr-dump from-npy --help >/dev/null
run_sh "cmr-decode --resize none '$J/progressive.jpg' | cmr-dump show -a | tail -n +2 >'$WORK/p.txt'; cmr-dump show -a '$WORK/a.cmr' | tail -n +2 >'$WORK/b.txt'; cmp '$WORK/p.txt' '$WORK/b.txt'"
expect_status 0
end

begin "EXIF orientation 6 is applied (and ignored with --no-exif)"
run_sh "cmr-decode --resize none '$J/exif6.jpg' | cmr-dump list -H"
expect_stdout_has "[64,32,3]"
run_sh "cmr-decode --no-exif --resize none '$J/exif6.jpg' | cmr-dump list -H"
expect_stdout_has "[32,64,3]"
end

begin "--resize squash, pad and none give the documented shapes; pad fills with --pad-color"
run_sh "cmr-decode -s 16 --resize squash '$J/big.jpg' | cmr-dump list -H"
expect_stdout_has "[16,16,3]"
run_sh "cmr-decode -s 30 --resize pad --pad-color 1,2,3 '$J/big.jpg' | cmr-dump show -n 3"
expect_stdout_has "[30,30,3]"
expect_stdout_has "1 2 3"
run_sh "cmr-decode --resize none '$J/big.jpg' | cmr-dump list -H"
expect_stdout_has "[200,300,3]"
end

# PNG and WebP: tests/fixtures/images and PIL's decoding of them (tests/ref/make-codec-refs.sh)
F=$SRCDIR/tests/fixtures/images
begin "PNG (every colour type, bit depth 1-16, palettes with tRNS, Adam7, all row filters) and WebP (lossy, lossless, alpha) equal PIL's convert('RGB'), as decoded and at 96 pixels (max abs 0)"
cmr-decode --resize none "$F" >"$WORK/codecs.cmr"
cmr-decode --exact -s 96 "$F/gray16.png" "$F/lossy-alpha.webp" "$F/palette8-trns.png" "$F/rgba8.png" >>"$WORK/codecs.cmr"
run cmr-dump diff --max-abs 0 "$SRCDIR/tests/golden/decode/pil-codecs.cmr" "$WORK/codecs.cmr"
expect_status 0
[ "$(grep -c '^[a-z]' "$OUT")" -eq 26 ] || why "expected 25 images compared (and the header): $(head -3 "$OUT")"
end

begin "PNG and WebP members of a tar decode whatever their names; corrupt ones are skipped and named"
mkdir "$WORK/pw" && cd "$WORK/pw"
cp "$F/rgba8.png" a-png.bin && cp "$F/lossy.webp" b-webp.dat
head -c 2000 "$F/rgb8.png" >c-trunc.png
cp "$F/rgb8.png" d-crc.png
printf '\000' | dd of=d-crc.png bs=1 seek=$(($(wc -c <d-crc.png) - 13)) conv=notrunc 2>/dev/null # the last IDAT's CRC
head -c 600 "$F/lossless.webp" >e-trunc.webp
# a VP8X header that announces an animation
printf 'RIFF\026\000\000\000WEBPVP8X\012\000\000\000\002\000\000\000\007\000\000\007\000\000' >f-anim.webp
cd "$WORK" && tar cf pw.tar -C pw . && rm -r pw
run_sh "cmr-decode --resize none pw.tar | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "a-png b-webp " ] || why "records: $(cat "$OUT")"
expect_stderr_has "pw.tar: ./c-trunc.png: corrupt PNG: truncated file (skipped)"
expect_stderr_has "pw.tar: ./d-crc.png: corrupt PNG: IDAT: CRC error (skipped)"
expect_stderr_has "pw.tar: ./e-trunc.webp: corrupt WebP: the image data does not decode (skipped)"
expect_stderr_has "pw.tar: ./f-anim.webp: animated WebP (only still images are decoded) (skipped)"
expect_stderr_has "4 of 6 images could not be decoded"
run cmr-decode --max-pixels 1000 -s 16 "$F/gray8.png" "$F/lossy.webp"
expect_status 1
expect_stderr_has "gray8.png: image of 72x54 pixels exceeds the limit of 1000 pixels (skipped)"
expect_stderr_has "lossy.webp: image of 72x54 pixels exceeds the limit of 1000 pixels (skipped)"
end

begin "output is byte-identical whatever the thread count"
cmr-decode -j 1 -s 24 "$J" "$J" "$J" >"$WORK/j1.cmr"
cmr-decode -j 2 -s 24 "$J" "$J" "$J" >"$WORK/j2.cmr"
cmr-decode -j 7 -s 24 "$J" "$J" "$J" >"$WORK/j7.cmr"
# provenance differs in its arguments; compare the image records
for n in 1 2 7; do cmr-dump show -a "$WORK/j$n.cmr" >"$WORK/j$n.txt"; done
expect_same "$WORK/j1.txt" "$WORK/j2.txt"
expect_same "$WORK/j1.txt" "$WORK/j7.txt"
[ "$(grep -c image "$WORK/j1.txt")" -eq 21 ] || why "expected 21 records"
end

begin "tar, tar.gz, tar.zst, zip and a tar on standard input give the same records"
(cd "$J" && tar cf "$WORK/a.tar" rgb.jpg gray.jpg && printf 'a caption\n' >rgb.txt && tar rf "$WORK/a.tar" rgb.txt)
gzip -c "$WORK/a.tar" >"$WORK/a.tar.gz"
zstd -q -c "$WORK/a.tar" >"$WORK/a.tar.zst"
(cd "$J" && zip -q "$WORK/a.zip" rgb.jpg gray.jpg rgb.txt)
cmr-decode -s 16 "$WORK/a.tar" | cmr-dump show -a >"$WORK/tar.txt"
for f in a.tar.gz a.tar.zst a.zip; do
	cmr-decode -s 16 "$WORK/$f" | cmr-dump show -a >"$WORK/x.txt"
	cmp -s "$WORK/tar.txt" "$WORK/x.txt" || why "$f differs"
done
cmr-decode -s 16 <"$WORK/a.tar" | cmr-dump show -a >"$WORK/x.txt"
cmp -s "$WORK/tar.txt" "$WORK/x.txt" || why "stdin differs"
[ "$(grep -c image "$WORK/tar.txt")" -eq 2 ] || why "the .txt member was not skipped"
end

# ---- bad input ----
B=$WORK/bad
mkdir -p "$B"
cp "$J/rgb.jpg" "$B/a-good.jpg"
head -c $(($(wc -c <"$J/big.jpg") - 300)) "$J/big.jpg" >"$B/b-truncated.jpg"
printf 'this is not a jpeg' >"$B/c-garbage.jpg"
: >"$B/d-empty.jpg"
cp "$J/rgb.jpg" "$B/e-huge.jpg"
# SOF0 height and width at 60000 x 60000 (the marker follows the quantization tables)
off=$(od -A d -t x1 -v "$B/e-huge.jpg" | awk '{for(i=2;i<=NF;i++){n=$1+i-2; if(p=="ff" && $i=="c0"){print n; exit} p=$i}}')
printf '\352\140\352\140' | dd of="$B/e-huge.jpg" bs=1 seek=$((off + 4)) conv=notrunc 2>/dev/null
cp "$J/gray.jpg" "$B/f-good.jpg"
(cd "$B" && tar cf "$WORK/bad.tar" *)

begin "bad members are skipped and named; the good ones are written; exit 1"
run_sh "cmr-decode -s 16 '$WORK/bad.tar' | cmr-dump list -H"
expect_status 0 # the status of cmr-dump; cmr-decode's follows
awk '$2 != 0 {print $NF}' "$OUT" | tr '\n' ' ' >"$WORK/keys"
[ "$(cat "$WORK/keys")" = "a-good f-good " ] || why "records: $(cat "$WORK/keys")"
expect_stderr_has "bad.tar: b-truncated.jpg: corrupt JPEG data: Premature end of JPEG file (skipped)"
expect_stderr_has "bad.tar: c-garbage.jpg: not a JPEG, PNG or WebP file (GIF, BMP and TIFF are not decoded) (skipped)"
expect_stderr_has "bad.tar: d-empty.jpg: empty file (skipped)"
expect_stderr_has "bad.tar: e-huge.jpg: image of 60000x60000 pixels exceeds the limit of 178956970 pixels (skipped)"
expect_stderr_has "cmr-decode: 4 of 6 images could not be decoded"
run cmr-decode -s 16 -o "$WORK/out.cmr" "$WORK/bad.tar"
expect_status 1
run cmr-dump verify "$WORK/out.cmr"
expect_stdout_has "3 records ok"
end

begin "--strict stops at the first bad image with exit 1, records before it intact"
run_sh "cmr-decode --strict -s 16 '$WORK/bad.tar' > '$WORK/strict.cmr'"
expect_status 1
expect_stderr_has "b-truncated.jpg: corrupt JPEG data"
run cmr-dump list -H "$WORK/strict.cmr"
expect_status 0
expect_stdout_has "a-good"
grep -q f-good "$OUT" && why "went on after the error"
end

begin "a truncated tar is reported with the archive and the last member"
head -c 3000 "$WORK/bad.tar" >"$WORK/trunc.tar"
run_sh "cmr-decode -s 16 '$WORK/trunc.tar' | cmr-dump verify"
expect_stderr_has "trunc.tar: "
expect_stderr_has "runcated"
expect_stderr_has "input could not be read to the end"
end

begin "an empty tar gives no records, a warning, and exit 0"
tar cf "$WORK/empty.tar" -T /dev/null
run cmr-decode -o "$WORK/e.cmr" "$WORK/empty.tar"
expect_status 0
expect_stderr_has "empty.tar: archive has no files"
run cmr-dump list -H "$WORK/e.cmr"
[ "$(grep -c image "$OUT")" -eq 0 ] || why "records in an empty archive"
end

begin "an empty directory: a warning and an empty stream; files but no image: an error, nothing written"
mkdir "$WORK/nothing" "$WORK/textonly"
run cmr-decode -o "$WORK/n.cmr" "$WORK/nothing"
expect_status 0
expect_stderr_has "warning: no images: $WORK/nothing holds no files"
printf 'a caption\n' >"$WORK/textonly/a.txt"
printf 'another\n' >"$WORK/textonly/b.txt"
run cmr-decode -o "$WORK/t.cmr" "$WORK/textonly"
expect_status 1
expect_stderr_has "no images among the 2 files of $WORK/textonly"
expect_stderr_has "hint: cmr-decode reads JPEG, PNG and WebP members"
expect_no_file "$WORK/t.cmr"
end

begin "a directory: a symbolic link loop is not followed; sidecar files are skipped as in a tar"
mkdir -p "$WORK/looped/sub"
cp "$J/rgb.jpg" "$WORK/looped/sub/a.jpg"
printf 'a caption\n' >"$WORK/looped/sub/a.txt"
ln -s .. "$WORK/looped/sub/up"
ln -s . "$WORK/looped/self"
run cmr-decode -s 24 -o "$WORK/l.cmr" "$WORK/looped"
expect_status 0
expect_stderr_has "self: a symbolic link to a directory it is in: not followed"
[ "$(cmr-dump list -H "$WORK/l.cmr" | grep -c image)" -eq 1 ] || why "$(cmr-dump list -H "$WORK/l.cmr" | grep -c image) records, 1 expected"
end

begin "undecodable images: the first 10 errors are shown, then how many more"
mkdir "$WORK/bad12"
for i in $(seq 12); do printf 'not a jpeg' >"$WORK/bad12/x$i.png"; done
run cmr-decode -o "$WORK/b.cmr" "$WORK/bad12"
expect_status 1
[ "$(grep -c '(skipped)' "$ERR")" -eq 10 ] || why "$(grep -c '(skipped)' "$ERR") errors shown"
expect_stderr_has "2 more skipped, not shown (the first 10 are above)"
expect_stderr_has "12 of 12 images could not be decoded"
end

begin "-m MODEL: the size the checkpoint takes; -s that disagrees is a usage error"
"$BUILD/tests/mkclip" model "$WORK/mini" mini
run_sh "cmr-decode -m '$WORK/mini' '$J/rgb.jpg' | cmr-dump list -H"
expect_status 0
expect_stdout_has "image       u8    [8,8,3]"
run cmr-decode -m "$WORK/mini" -s 8 -o "$WORK/m.cmr" "$J/rgb.jpg"
expect_status 0
run cmr-decode -m "$WORK/mini" -s 224 -o "$WORK/m.cmr" "$J/rgb.jpg"
expect_status 2
expect_stderr_has "-s 224 disagrees with $WORK/mini, which takes images of 8: give one of them"
run cmr-decode -m "$WORK/nowhere" "$J/rgb.jpg"
expect_status 1
expect_stderr_has "nowhere: no such model directory (a Hugging Face CLIP checkpoint: config.json, model.safetensors)"
end

begin "a file that is neither archive nor JPEG is an error"
printf 'hello\n' >"$WORK/hello.txt"
run cmr-decode -o "$WORK/h.cmr" "$WORK/hello.txt"
expect_status 1
expect_stderr_has "hello.txt: Unrecognized archive format"
end

begin "usage errors: bad size, bad mode, bad pad colour"
run cmr-decode -s 0
expect_status 2
run cmr-decode --resize stretch
expect_status 2
expect_stderr_has "--resize: 'stretch' is not"
run cmr-decode --pad-color 1,2
expect_status 2
end

# ---- real photos (../shared) ----
begin "all Flickr8k shards, fullres.tar and COCO decode without error, one record per JPEG"
if have_shared; then
	for a in "$SHARED"/data/flickr8k/*.tar "$SHARED"/data/flickr8k-fullres/fullres.tar "$SHARED"/data/coco-mini/val2017.tar; do
		want=$(tar tf "$a" | grep -ci '\.jpe\?g$')
		run_sh "cmr-decode '$a' | cmr-dump verify"
		[ "$STATUS" -eq 0 ] || why "$(basename "$a"): status $STATUS"
		[ -s "$ERR" ] && why "$(basename "$a"): $(head -c 300 "$ERR")"
		got=$(sed -n 's/ records ok//p' "$OUT")
		[ "$got" -eq $((want + 1)) ] || why "$(basename "$a"): $got records for $want JPEGs (+1 provenance)"
	done
	end
else
	skip "../shared absent"
fi

begin "pixels equal PIL's bicubic resize + center crop on 24 real photos (--exact: bit-identical, max abs 0)"
if have_shared; then
	for a in flickr8k-fullres/fullres.tar coco-mini/val2017.tar; do
		m=$(tar tf "$SHARED/data/$a" | head -12)
		mkdir -p "$WORK/sub"
		tar xf "$SHARED/data/$a" -C "$WORK/sub" $m
		(cd "$WORK/sub" && tar cf "$WORK/sub-$(basename "$a")" $m)
	done
	cmr-decode --exact -s 96 "$WORK/sub-fullres.tar" "$WORK/sub-val2017.tar" >"$WORK/s96.cmr"
	run cmr-dump diff --max-abs 0 "$SRCDIR/tests/golden/decode/pil96.cmr" "$WORK/s96.cmr"
	expect_status 0
	[ "$(grep -c . "$OUT")" -eq 26 ] || why "expected 24 images compared"
	end
	begin "default DCT-domain scaling stays close to PIL (mean <= 0.1, max <= 8; measured 0.05 and 4)"
	cmr-decode -s 96 "$WORK/sub-fullres.tar" "$WORK/sub-val2017.tar" >"$WORK/d96.cmr"
	run cmr-dump diff --mean-abs 0.1 --max-abs 8 "$SRCDIR/tests/golden/decode/pil96.cmr" "$WORK/d96.cmr"
	expect_status 0
	end
else
	skip "../shared absent"
fi
