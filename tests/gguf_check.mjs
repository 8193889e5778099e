// Reads GGUF files with @huggingface/gguf (npm, an independent parser) and
// prints, for each, its version, metadata and tensors in one canonical text
// form that tests/e2e_gguf.sh compares with bin/gguf_tool show.
//   node tests/gguf_check.mjs FILE.gguf...
import { gguf } from "@huggingface/gguf";

const typeNames = ["F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
                   "Q4_K", "Q5_K", "Q6_K", "Q8_K"];
typeNames[30] = "BF16";

for (const file of process.argv.slice(2)) {
    const { metadata, tensorInfos } = await gguf(file, { allowLocalFile: true });
    const lines = [`version ${metadata.version}`, `tensors ${tensorInfos.length}`];
    for (const [k, v] of Object.entries(metadata)) {
        if (k === "version" || k === "tensor_count" || k === "kv_count")
            continue;
        let s;
        if (Array.isArray(v))
            s = `[${v.length}]`;
        else if (typeof v === "bigint")
            s = v.toString();
        else if (typeof v === "string")
            s = v.length > 80 ? v.slice(0, 80) + "..." : v;
        else
            s = String(v);
        lines.push(`kv ${k} ${s}`);
    }
    for (const t of tensorInfos)
        lines.push(`tensor ${t.name} ${typeNames[t.dtype] ?? t.dtype} [${t.shape.map(String).join(", ")}] ${t.offset}`);
    console.log(lines.join("\n"));
}
