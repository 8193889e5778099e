// hf_tokenize.mjs: token ids from @huggingface/transformers (npm), an
// independent implementation of Hugging Face tokenizers, for e2e_special_tokens.sh.
//
//   node tests/hf_tokenize.mjs TOKENIZER_DIR TEXTS.json [--no-parse-special]
//
// Loads TOKENIZER_DIR/tokenizer.json and tokenizer_config.json from local
// files only (no hub access) and prints a JSON array of id arrays, without
// BOS/EOS (add_special_tokens: false). --no-parse-special: Hugging Face's
// split_special_tokens=True, which transformers.js does not implement; it is
// had by loading a copy of tokenizer.json whose special added tokens are
// left out of "added_tokens" (they are then never split out of a text, and
// the text around them is tokenized as any other).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { env, AutoTokenizer } from '@huggingface/transformers';

const [srcDir, textsFile, flag] = process.argv.slice(2);
let dir = path.resolve(srcDir);
let tmp = null;
if (flag === '--no-parse-special') {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hf_tokenize_'));
    const t = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    t.added_tokens = t.added_tokens.filter((a) => !a.special);
    fs.mkdirSync(path.join(tmp, 'tok'));
    fs.writeFileSync(path.join(tmp, 'tok', 'tokenizer.json'), JSON.stringify(t));
    fs.copyFileSync(path.join(dir, 'tokenizer_config.json'), path.join(tmp, 'tok', 'tokenizer_config.json'));
    dir = path.join(tmp, 'tok');
}
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(dir) + '/';
const texts = JSON.parse(fs.readFileSync(textsFile, 'utf8'));
const tok = await AutoTokenizer.from_pretrained(path.basename(dir), { local_files_only: true });
if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
const out = texts.map((t) => tok.encode(t, { add_special_tokens: false }));
console.log(JSON.stringify(out));
