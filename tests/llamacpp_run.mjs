// llamacpp_run: an independent engine on GGUF files, for
// tests/e2e_llamacpp.sh. node-llama-cpp (npm, pinned in .ci/run) loads each
// file with its prebuilt llama.cpp library, on the CPU.
//
//   node tests/llamacpp_run.mjs tokenize TEXTS.json FILE.gguf...
//       the vocabulary only; TEXTS.json a JSON array of strings. One JSON
//       line per file: {"file": F, "ids": [[...], ...]}, each text's ids
//       without BOS, special tokens not parsed.
//   node tests/llamacpp_run.mjs greedy N_TOKENS PROMPT FILE.gguf...
//       One JSON line per file: {"file": F, "prompt_ids": [...],
//       "generated_ids": [...]}. prompt_ids are BOS (when the vocabulary asks
//       for one) and the prompt's tokens, as the starter encodes --prompt.
//       Greedy decoding stops after N_TOKENS or at an end-of-generation
//       token, which is listed (the starter lists it too). The KV cache is
//       F32 as the starter's default, one thread, no flash attention.
// A file that does not load gives {"file": F, "error": "..."}.
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [mode, arg1, arg2, ...rest] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });

async function greedy(file, nTok, prompt) {
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    const context = await model.createContext({
        contextSize: 256, batchSize: 256, threads: 1, flashAttention: false,
        experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
    });
    try {
        const ids = [];
        if (model.tokens.shouldPrependBosToken && model.tokens.bos != null)
            ids.push(model.tokens.bos);
        ids.push(...model.tokenize(prompt, false));
        const gen = [];
        for await (const t of context.getSequence().evaluate(ids, { temperature: 0 })) {
            gen.push(t);
            if (gen.length >= nTok || model.isEogToken(t))
                break;
        }
        return { file, prompt_ids: ids, generated_ids: gen };
    } finally {
        await context.dispose();
        await model.dispose();
    }
}

async function tokenize(file, texts) {
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0, vocabOnly: true });
    try {
        return { file, ids: texts.map((t) => model.tokenize(t, false)) };
    } finally {
        await model.dispose();
    }
}

const files = mode === "greedy" ? rest : [arg2, ...rest];
const texts = mode === "tokenize" ? JSON.parse(readFileSync(arg1, "utf8")) : null;
for (const file of files) {
    let r;
    try {
        r = mode === "greedy" ? await greedy(file, Number(arg1), arg2) : await tokenize(file, texts);
    } catch (e) {
        r = { file, error: String(e && e.message ? e.message : e).split("\n")[0] };
    }
    console.log(JSON.stringify(r));
}
await llama.dispose();
