#!/usr/bin/python3
"""Fixtures for the Hugging Face interop tests (lib/hf.c, `art import-hf`,
`art export-hf`): a tiny T5 v1.1 written as HF checkpoint directories, by hand
(no `safetensors` or `transformers` package: an 8-byte little-endian header
length, a JSON header, raw little-endian data), plus the rank-classification
scores the PyTorch T5 of t5_ref.py gives on a few examples.

Writes tests/fixtures/hf/:
  tiny-f32/             config.json (the fields export-hf writes), model.safetensors
                        (F32, with the tied encoder/decoder.embed_tokens copies),
                        spiece.model (trained by spm_train), tokenizer_config.json
  tiny-bf16/            a config.json as transformers writes it for t5-v1_1 (extra
                        fields, nested objects), model.safetensors in BF16, no tied
                        copies
  tiny-f16-sharded/     F16 in two shards + model.safetensors.index.json, with the
                        unused decoder EncDecAttention relative_attention_bias
                        (present in old conversions; HF ignores it)
  tiny-ia3-peft/        a PEFT IA3 adapter: adapter_config.json and
                        adapter_model.safetensors (k, v: [out, 1]; wo: [1, d_ff])
  tiny-v5/              the f32 model as transformers 5 saves a T5 v1.1 / flan-t5:
                        tie_word_embeddings true, scale_decoder_outputs false,
                        shared.weight and lm_head.weight only
  tiny-mt5-v5/          the same model as transformers 5 saves an mT5 (model_type mt5,
                        tie_word_embeddings true, no scale_decoder_outputs)
  tiny-ia3-regex/       tiny-ia3-peft's vectors with target_modules a regular expression
                        and feedforward_modules a regular expression too
  tiny-task-a/, tiny-task-b/
                        two "fine-tunes" of the f32 model (its weights plus small
                        random deltas), saved as transformers 4 does (F32, no tied
                        copies), and tiny-ia3-b/ a second adapter: what the recipe
                        tests (tests/test_recipe.sh, configs/recipes/) merge
  tasks/a.jsonl, tasks/b.jsonl
                        their tasks in our JSON Lines, words the tokenizer knows
  tiny-ia3-mt5/         an adapter targeting k, v, wi_1 (not feedforward, PEFT's mT5
                        default) and wo (feedforward): wi_1's output and wo's input
                        scale the same d_ff entries, so they multiply
  convert.safetensors   BF16 / F16 bit patterns (specials + random) with torch's
                        f32 values, and f32 values with torch's BF16 / F16 rounding
  tiny-orig/            the original T5 layout (t5-small/base/large: ReLU feed-forward
                        wi / wo, lm_head tied to shared.weight, the decoder output
                        scaled by d_model**-0.5) with CFG's shapes, its own weights:
                        config.json as export-hf writes it, shared.weight and no
                        lm_head (save_pretrained drops the tied names); tiny-f32's
                        tokenizer
  tiny-orig-task-a/, tiny-orig-task-b/
                        two "fine-tunes" of it (small random deltas) as transformers 4
                        saves them, for configs/recipes/mats-original.yml
  tiny-orig-v4/         the same model as transformers 4 save_pretrained writes
                        t5-small: feed_forward_proj / dense_act_fn "relu",
                        is_gated_act false, tie_word_embeddings left out (its
                        default, true), no scale_decoder_outputs
  tiny-orig-hub/        as the hub's t5-small config.json has it: no
                        feed_forward_proj, dense_act_fn or tie flag at all (T5Config's
                        defaults: relu, tied), old fields; every tied copy in the
                        weights (encoder/decoder.embed_tokens, lm_head), equal to
                        shared.weight
  tiny-orig-v5/         as transformers 5 writes it: tie_word_embeddings true,
                        scale_decoder_outputs true, "dtype"
  tiny-ia3-orig/        a PEFT IA3 adapter on it as PEFT's t5 default makes one: k, v
                        (outputs) and wo (feedforward: its input, the ReLU output)
  scores.json           examples (ids) and the summed log-likelihood of every choice
                        (EOS included) under the f32 model, its BF16 and F16
                        roundings, the f32 model with the IA3 vectors (f32_ia3)
                        and with tiny-ia3-mt5's (f32_ia3_mt5), and under the
                        original-layout model without (orig) and with its adapter
                        (orig_ia3)

The safetensors layout is the canonical one the `safetensors` library writes:
tensors sorted by name, "__metadata__" first, compact JSON padded with spaces
to a multiple of 8.

Run: /usr/bin/python3 tests/reference/hf_ref.py   (make hf-fixtures)
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import t5_ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'hf')

CFG = dict(vocab_size=64, d_model=16, d_kv=4, num_heads=2, d_ff=24, num_layers=2,
           num_decoder_layers=1, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, layer_norm_epsilon=1e-6)
CFG_ORIG = dict(CFG, feed_forward_proj='relu', tie_word_embeddings=True)
N_PIECES, EXTRA_IDS = 40, 24  # spm_train may keep fewer pieces (36 here)


# ---------------------------------------------------------------- safetensors by hand

def tensor_bytes(t, dtype):
    t = t.contiguous()
    if dtype == 'F32':
        return t.to(torch.float32).numpy().tobytes()
    if dtype == 'F16':
        return t.to(torch.float16).view(torch.int16).numpy().astype('<i2').tobytes()
    if dtype == 'BF16':
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype('<i2').tobytes()
    if dtype == 'RAW16':  # int16 bit patterns written as-is
        return t.to(torch.int16).numpy().astype('<i2').tobytes()
    raise ValueError(dtype)


def safetensors_bytes(tensors):
    """tensors: {name: (dtype, tensor)}; dtype RAW16 is written under the name
    given by the tensor's 'as' entry: (('BF16', 'RAW16'), bits)."""
    header = {'__metadata__': {'format': 'pt'}}
    blobs, off = [], 0
    for name in sorted(tensors):
        dtype, t = tensors[name]
        store = dtype
        if isinstance(dtype, tuple):
            dtype, store = dtype
        b = tensor_bytes(t, store)
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def write_json(path, obj):
    write(path, (json.dumps(obj, indent=2) + '\n').encode())


def write_adapter(d, vectors, target_modules, feedforward_modules, base='tiny/t5-v1_1'):
    """A PEFT IA3 adapter directory: adapter_model.safetensors and
    adapter_config.json as PEFT writes them."""
    write(os.path.join(d, 'adapter_model.safetensors'), safetensors_bytes(vectors))
    write_json(os.path.join(d, 'adapter_config.json'), {
        'auto_mapping': None, 'base_model_name_or_path': base, 'fan_in_fan_out': False,
        'feedforward_modules': feedforward_modules, 'inference_mode': True, 'init_ia3_weights': True,
        'modules_to_save': None, 'peft_type': 'IA3', 'revision': None, 'target_modules': target_modules,
        'task_type': 'SEQ_2_SEQ_LM'})


# ---------------------------------------------------------------- configs

def export_config(cfg, torch_dtype):
    """Exactly the fields and order `art export-hf` writes (HF T5Config names):
    T5 v1.1's gated-gelu, untied and unscaled; the original layout (CFG_ORIG)
    relu, tied and scaled, both flags true so that transformers 4 and 5 read it
    the same."""
    relu, tied = t5_ref.is_relu(cfg), t5_ref.is_tied(cfg)
    return {
        'architectures': ['T5ForConditionalGeneration'],
        'd_ff': cfg['d_ff'], 'd_kv': cfg['d_kv'], 'd_model': cfg['d_model'],
        'decoder_start_token_id': 0, 'dense_act_fn': 'relu' if relu else 'gelu_new', 'dropout_rate': 0.1,
        'eos_token_id': 1, 'feed_forward_proj': 'relu' if relu else 'gated-gelu', 'initializer_factor': 1.0,
        'is_encoder_decoder': True, 'is_gated_act': not relu,
        'layer_norm_epsilon': cfg['layer_norm_epsilon'], 'model_type': 't5',
        'num_decoder_layers': cfg['num_decoder_layers'], 'num_heads': cfg['num_heads'],
        'num_layers': cfg['num_layers'], 'pad_token_id': 0,
        'relative_attention_max_distance': cfg['relative_attention_max_distance'],
        'relative_attention_num_buckets': cfg['relative_attention_num_buckets'],
        'scale_decoder_outputs': tied,
        'tie_word_embeddings': tied, 'torch_dtype': torch_dtype, 'use_cache': True,
        'vocab_size': cfg['vocab_size'],
    }


def v5_config(cfg, model_type):
    """config.json as transformers 5 writes it on save_pretrained: the T5
    config forces tie_word_embeddings to true (PR #42815) and records the
    v1.1 output layer as scale_decoder_outputs false; MT5Config has no such
    field (its models never scale). Extra 5.x fields the importer must skip."""
    c = export_config(cfg, 'float32')
    c['tie_word_embeddings'] = True
    c['transformers_version'] = '5.0.0'
    c['dtype'] = c.pop('torch_dtype')
    if model_type == 'mt5':
        del c['scale_decoder_outputs']
        c['architectures'] = ['MT5ForConditionalGeneration']
        c['model_type'] = 'mt5'
        c['tokenizer_class'] = 'T5Tokenizer'
    return dict(sorted(c.items()))


def hub_style_config(cfg):
    """Like google/t5-v1_1-* config.json: extra fields the importer must skip."""
    c = export_config(cfg, 'bfloat16')
    del c['dense_act_fn'], c['is_gated_act'], c['scale_decoder_outputs']
    c.update({'_name_or_path': 'tiny/t5-v1_1', 'gradient_checkpointing': False, 'n_positions': 512,
              'output_past': True, 'transformers_version': '4.38.0.dev0',
              'task_specific_params': {'summarization': {'prefix': 'summarize: ', 'max_length': 200,
                                                         'length_penalty': 2.0, 'early_stopping': True}},
              'note': 'unicode \u00e9\u4e2d and escapes \\ " \t /'})
    return c


def orig_v4_config(cfg):
    """What transformers 4's save_pretrained writes for a t5-small (to_diff_dict
    against PretrainedConfig's defaults: tie_word_embeddings, true there too,
    left out, T5Config's own fields all written, classifier_dropout among them;
    no scale_decoder_outputs, which 4.x does not know)."""
    c = export_config(cfg, 'float32')
    del c['tie_word_embeddings'], c['scale_decoder_outputs']
    c.update({'classifier_dropout': 0.0, 'n_positions': 512, 'output_past': True,
              'transformers_version': '4.46.3'})
    return dict(sorted(c.items()))


def orig_hub_config(cfg):
    """Like the hub's google-t5/t5-small config.json: no feed_forward_proj,
    dense_act_fn, is_gated_act or tie flag (T5Config's defaults: relu, tied),
    old fields, task_specific_params (num_decoder_layers and the bucket
    distance given: this model's differ from the defaults)."""
    c = export_config(cfg, 'float32')
    for k in ('dense_act_fn', 'feed_forward_proj', 'is_gated_act', 'tie_word_embeddings', 'scale_decoder_outputs',
              'torch_dtype', 'use_cache'):
        del c[k]
    c.update({'n_positions': 512, 'output_past': True,
              'task_specific_params': {'translation_en_to_de': {'early_stopping': True, 'max_length': 300,
                                                                'num_beams': 4, 'prefix': 'translate English to German: '}}})
    return c


def orig_v5_config(cfg):
    """transformers 5's save_pretrained: tie_word_embeddings true and
    scale_decoder_outputs true for the original layout, "dtype"."""
    c = export_config(cfg, 'float32')
    c['transformers_version'] = '5.0.0'
    c['dtype'] = c.pop('torch_dtype')
    return dict(sorted(c.items()))


# ---------------------------------------------------------------- tokenizer

def make_spiece(path):
    text = ('the cat sat on the mat and the dog sat on the log while a bird sang '
            'in the tall green tree near the old stone wall by the quiet river\n') * 40
    with tempfile.TemporaryDirectory() as d:
        inp = os.path.join(d, 'text.txt')
        with open(inp, 'w') as f:
            f.write(text)
        # relative paths: the trainer spec inside the .model records them
        subprocess.run(['spm_train', '--input=text.txt', '--model_prefix=sp', f'--vocab_size={N_PIECES}',
                        '--model_type=unigram', '--pad_id=0', '--eos_id=1', '--unk_id=2', '--bos_id=-1',
                        '--character_coverage=1.0', '--num_threads=1', '--normalization_rule_name=identity', '--random_seed=1', '--hard_vocab_limit=false'],
                       check=True, capture_output=True, cwd=d)
        with open(f'{d}/sp.model', 'rb') as f:
            write(path, f.read())


# ---------------------------------------------------------------- conversions

def convert_fixture(gen):
    bf_special = [0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0x7f7f, 0xff7f,
                  0x7f80, 0xff80, 0x7fc0, 0xffc0, 0x7f81, 0x7fff]
    f16_special = [0x0000, 0x8000, 0x0001, 0x8001, 0x0200, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff,
                   0xfbff, 0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0x7dff, 0x7fff]
    rnd = torch.randint(0, 65536, (2000,), generator=gen)
    bf = torch.tensor(bf_special + rnd.tolist(), dtype=torch.int32)
    fh = torch.tensor(f16_special + torch.randint(0, 65536, (2000,), generator=gen).tolist(), dtype=torch.int32)
    bf16 = (bf - 65536 * (bf >= 32768)).to(torch.int16)   # same bits as int16
    f16 = (fh - 65536 * (fh >= 32768)).to(torch.int16)
    bf_f32 = bf16.view(torch.bfloat16).to(torch.float32)
    f16_f32 = f16.view(torch.float16).to(torch.float32)

    # f32 -> bf16 / f16 rounding: random values over many magnitudes, exact
    # ties (both parities), the f16 overflow edge, f16 subnormal ties, zeros
    vals = (torch.randn(3000, generator=gen, dtype=torch.float64) *
            torch.pow(2.0, torch.randint(-30, 20, (3000,), generator=gen).double())).float()
    bits = []
    for hi in (0x3f80, 0x3f81, 0x4049, 0xc2f7, 0x0080, 0x7f7f):
        bits += [(hi << 16) | 0x8000, (hi << 16) | 0x7fff, (hi << 16) | 0x8001]
    for m in (0x1000, 0x3000, 0x0fff, 0x1001):      # f16 normal ties around 1.0
        bits.append(0x3f800000 | m)
    special = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32).tolist()
    special += [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65519.996, 65520.0, 65536.0, 1e6, -1e6,
                2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 5 * 2.0 ** -26, 2.0 ** -26,
                1.5 * 2.0 ** -24, 2.0 ** -24 * 1023.5, 3.4e38, -3.4e38, 1e-40, -1e-40,
                float('inf'), float('-inf'), float('nan')]
    src = torch.cat([torch.tensor(special, dtype=torch.float32), vals])
    return {
        'bf16_bits': (('BF16', 'RAW16'), bf16), 'bf16_as_f32': ('F32', bf_f32),
        'f16_bits': (('F16', 'RAW16'), f16), 'f16_as_f32': ('F32', f16_f32),
        'f32_src': ('F32', src), 'f32_to_bf16': ('BF16', src), 'f32_to_f16': ('F16', src),
    }


# ---------------------------------------------------------------- main

def main():
    gen = torch.Generator().manual_seed(20261126)
    P = t5_ref.random_params(CFG, gen)
    IA = {n: 1.0 + 0.3 * torch.randn(s, generator=gen) for n, s in t5_ref.ia3_shapes(CFG).items()}
    shared = P['shared.weight']

    # tiny-f32: canonical, with the tied copies; config as export-hf writes it
    d = os.path.join(OUT, 'tiny-f32')
    t = {n: ('F32', v) for n, v in P.items()}
    t['encoder.embed_tokens.weight'] = ('F32', shared)
    t['decoder.embed_tokens.weight'] = ('F32', shared)
    write(os.path.join(d, 'model.safetensors'), safetensors_bytes(t))
    write_json(os.path.join(d, 'config.json'), export_config(CFG, 'float32'))
    make_spiece(os.path.join(d, 'spiece.model'))
    write_json(os.path.join(d, 'tokenizer_config.json'),
               {'eos_token': '</s>', 'extra_ids': EXTRA_IDS, 'model_max_length': 512, 'pad_token': '<pad>',
                'tokenizer_class': 'T5Tokenizer', 'unk_token': '<unk>'})

    # tiny-bf16: hub-style config, no tied copies
    d = os.path.join(OUT, 'tiny-bf16')
    write(os.path.join(d, 'model.safetensors'), safetensors_bytes({n: ('BF16', v) for n, v in P.items()}))
    write_json(os.path.join(d, 'config.json'), hub_style_config(CFG))

    # tiny-f16-sharded: two shards, index, the ignored key
    d = os.path.join(OUT, 'tiny-f16-sharded')
    names = sorted(P) + ['decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight']
    extra = torch.randn(CFG['relative_attention_num_buckets'], CFG['num_heads'], generator=gen)
    allp = dict(P)
    allp[names[-1]] = extra
    half = len(names) // 2
    files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    weight_map, total = {}, 0
    for i, part in enumerate((names[:half], names[half:])):
        write(os.path.join(d, files[i]), safetensors_bytes({n: ('F16', allp[n]) for n in part}))
        for n in part:
            weight_map[n] = files[i]
            total += 2 * allp[n].numel()
    write_json(os.path.join(d, 'model.safetensors.index.json'),
               {'metadata': {'total_size': total}, 'weight_map': dict(sorted(weight_map.items()))})
    c = export_config(CFG, 'float16')
    write_json(os.path.join(d, 'config.json'), c)

    # tiny-ia3-peft: PEFT's IA3 layout (wi_1's vector is wo's input scale)
    d = os.path.join(OUT, 'tiny-ia3-peft')
    ad = {}
    for n, v in IA.items():
        mod = n[:-len('.ia3_vector')]
        if mod.endswith('DenseReluDense.wi_1'):
            ad['base_model.model.' + mod[:-len('wi_1')] + 'wo.ia3_l'] = ('F32', v.view(1, -1))
        else:
            ad['base_model.model.' + mod + '.ia3_l'] = ('F32', v.view(-1, 1))
    write_adapter(d, ad, ['k', 'v', 'wo'], ['wo'])

    write(os.path.join(OUT, 'convert.safetensors'), safetensors_bytes(convert_fixture(gen)))

    # scores: examples of varying lengths, 2-4 choices each, every sequence ends with EOS
    examples = []
    for i in range(6):
        te = int(torch.randint(3, 12, (1,), generator=gen))
        inp = torch.randint(3, CFG['vocab_size'], (te,), generator=gen).tolist() + [1]
        nc = 2 + i % 3
        choices = [torch.randint(3, CFG['vocab_size'], (int(torch.randint(1, 5, (1,), generator=gen)),),
                                 generator=gen).tolist() + [1] for _ in range(nc)]
        examples.append({'input': inp, 'choices': choices, 'label': i % nc})

    def scores(params, ia=None):
        p64 = {n: v.double() for n, v in params.items()}
        ia64 = {n: v.double() for n, v in ia.items()} if ia else None
        with torch.no_grad():
            return [[float(t5_ref.choice_logprob(p64, CFG, ex['input'], ch, ia64)) for ch in ex['choices']]
                    for ex in examples]

    # transformers 5 layouts of the f32 model: no tied copies, the output
    # layer described by scale_decoder_outputs (t5) or by nothing (mt5)
    for d, mt in (('tiny-v5', 't5'), ('tiny-mt5-v5', 'mt5')):
        d = os.path.join(OUT, d)
        write(os.path.join(d, 'model.safetensors'), safetensors_bytes({n: ('F32', v) for n, v in P.items()}))
        write_json(os.path.join(d, 'config.json'), v5_config(CFG, mt))

    # the same vectors, targets as regular expressions (re.fullmatch on the module name)
    write_adapter(os.path.join(OUT, 'tiny-ia3-regex'), ad,
            r'.*(SelfAttention|EncDecAttention)\.(k|v)|.*\.DenseReluDense\.wo', r'.*\.wo')
    # k, v and wi_1 scale outputs, wo (feedforward) its input: wi_1's two
    # vectors multiply (the reference applies the product)
    ad2, IA2 = {}, {}
    for n, v in IA.items():
        mod = n[:-len('.ia3_vector')]
        if mod.endswith('DenseReluDense.wi_1'):
            wo_in = 1.0 + 0.3 * torch.randn(v.shape, generator=gen)
            ad2['base_model.model.' + mod + '.ia3_l'] = ('F32', v.view(-1, 1))
            ad2['base_model.model.' + mod[:-len('wi_1')] + 'wo.ia3_l'] = ('F32', wo_in.view(1, -1))
            IA2[n] = v.double() * wo_in.double()
        else:
            ad2['base_model.model.' + mod + '.ia3_l'] = ('F32', v.view(-1, 1))
            IA2[n] = v
    write_adapter(os.path.join(OUT, 'tiny-ia3-mt5'), ad2, ['k', 'v', 'wi_1', 'wo'], ['wo'])

    # two task models and a second adapter for the recipes
    for t in ('a', 'b'):
        Pt = {n: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=gen) for n, v in P.items()}
        d = os.path.join(OUT, f'tiny-task-{t}')
        write(os.path.join(d, 'model.safetensors'), safetensors_bytes({n: ('F32', v) for n, v in Pt.items()}))
        write_json(os.path.join(d, 'config.json'), export_config(CFG, 'float32'))
    adb = {n: ('F32', 1.0 + 0.2 * torch.randn(v[1].shape, generator=gen)) for n, v in ad.items()}
    write_adapter(os.path.join(OUT, 'tiny-ia3-b'), adb, ['k', 'v', 'wo'], ['wo'])
    words = ['cat', 'dog', 'bird', 'mat', 'log', 'tree', 'wall', 'river', 'stone', 'green']
    for t, (yes, no) in (('a', ('yes', 'no')), ('b', ('old', 'tall'))):
        lines = []
        for i in range(12):
            w = [words[int(k)] for k in torch.randint(0, len(words), (4,), generator=gen)]
            lines.append(json.dumps({'input': f'the {w[0]} sat on the {w[1]} by the {w[2]} {w[3]}',
                                     'choices': [yes, no], 'label': i % 2}))
        write(os.path.join(OUT, 'tasks', f'{t}.jsonl'), ('\n'.join(lines) + '\n').encode())

    rounded = lambda dt: {n: v.to(dt).float() for n, v in P.items()}  # noqa: E731
    out = {'config': CFG, 'examples': examples,
           'scores': {'f32': scores(P), 'bf16': scores(rounded(torch.bfloat16)),
                      'f16': scores(rounded(torch.float16)), 'f32_ia3': scores(P, IA),
                      'f32_ia3_mt5': scores(P, IA2)}}
    out['scores'].update(original_layout(examples))
    write_json(os.path.join(OUT, 'scores.json'), out)
    print(f'wrote {OUT}')


def original_layout(examples):
    """The original T5 layout's checkpoints (tiny-orig*, tiny-ia3-orig), from
    a generator of their own (the other fixtures keep their bytes); returns
    their scores on `examples`."""
    gen = torch.Generator().manual_seed(20261206)
    P = t5_ref.random_params(CFG_ORIG, gen)
    IA = {n: 1.0 + 0.3 * torch.randn(s, generator=gen) for n, s in t5_ref.ia3_shapes(CFG_ORIG).items()}
    assert 'lm_head.weight' not in P and any(n.endswith('DenseReluDense.wi.weight') for n in P)
    f32 = {n: ('F32', v) for n, v in P.items()}
    for d, cfg in (('tiny-orig', export_config(CFG_ORIG, 'float32')), ('tiny-orig-v4', orig_v4_config(CFG_ORIG)),
                   ('tiny-orig-v5', orig_v5_config(CFG_ORIG))):
        write(os.path.join(OUT, d, 'model.safetensors'), safetensors_bytes(f32))
        write_json(os.path.join(OUT, d, 'config.json'), cfg)
    for f in ('spiece.model', 'tokenizer_config.json'):
        with open(os.path.join(OUT, 'tiny-f32', f), 'rb') as src:
            write(os.path.join(OUT, 'tiny-orig', f), src.read())
    for t in ('a', 'b'):
        Pt = {n: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=gen) for n, v in P.items()}
        d = os.path.join(OUT, f'tiny-orig-task-{t}')
        write(os.path.join(d, 'model.safetensors'), safetensors_bytes({n: ('F32', v) for n, v in Pt.items()}))
        write_json(os.path.join(d, 'config.json'), orig_v4_config(CFG_ORIG))
    copies = dict(f32)
    for n in ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight'):
        copies[n] = ('F32', P['shared.weight'])
    write(os.path.join(OUT, 'tiny-orig-hub', 'model.safetensors'), safetensors_bytes(copies))
    write_json(os.path.join(OUT, 'tiny-orig-hub', 'config.json'), orig_hub_config(CFG_ORIG))
    # PEFT's IA3 on t5 (target_modules k, v, wo; feedforward_modules wo):
    # k, v [out, 1]; wo's input [1, d_ff], which is our wo.ia3_vector itself
    ad = {}
    for n, v in IA.items():
        mod = n[:-len('.ia3_vector')]
        ad['base_model.model.' + mod + '.ia3_l'] = ('F32', v.view(1, -1) if mod.endswith('.wo') else v.view(-1, 1))
    write_adapter(os.path.join(OUT, 'tiny-ia3-orig'), ad, ['k', 'v', 'wo'], ['wo'], 'tiny/t5-small')

    def scores(ia):
        p64 = {n: v.double() for n, v in P.items()}
        ia64 = {n: v.double() for n, v in ia.items()} if ia else None
        with torch.no_grad():
            return [[float(t5_ref.choice_logprob(p64, CFG_ORIG, ex['input'], ch, ia64)) for ch in ex['choices']]
                    for ex in examples]
    return {'orig': scores(None), 'orig_ia3': scores(IA)}


if __name__ == '__main__':
    main()
