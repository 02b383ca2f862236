/* test_config.c - config files and cache keys. */
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "harness.h"
#include "key.h"

static char dir[256];

static void write_file(const char *name, const char *text) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* cfg_load of dir/NAME into c */
static int load_conf(mc_cfg *c, const char *name) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return cfg_load(c, p);
}

static void test_parse_include_override(void) {
    write_file("base.conf", "# base\nmodel.d_model = 32\nmodel.num_heads=4   # trailing comment\n\ntrain.lr = 1e-3\n");
    write_file("exp.conf", "include base.conf\ntrain.lr = 3e-4\ntrain.name = hello world\n");
    mc_cfg *c = cfg_new();
    CHECK(load_conf(c, "exp.conf") == 0, "load: %s", mc_error());
    CHECK(cfg_set(c, "model.num_heads=8") == 0, "set");
    CHECK(cfg_int(c, "model.d_model", 0, 1, 100000) == 32, "d_model");
    CHECK(cfg_int(c, "model.num_heads", 0, 1, 64) == 8, "override by --set");
    CHECK(cfg_float(c, "train.lr", 0, 0, 1) == 3e-4, "later value wins");
    CHECK(!strcmp(cfg_str(c, "train.name", NULL), "hello world"), "string with space");
    CHECK(cfg_int(c, "train.steps", 77, 0, 1000) == 77, "default");
    CHECK(strstr(cfg_where(c, "train.lr"), "exp.conf:2") != NULL, "where %s", cfg_where(c, "train.lr"));
    CHECK(!strcmp(cfg_where(c, "model.num_heads"), "--set"), "where --set");
    CHECK(cfg_check_unknown(c, (const char *[]){"model", "train", NULL}) == 0, "no unknown: %s", mc_error());
    cfg_free(c);
}

static void test_unknown_key_names_file_and_line(void) {
    write_file("typo.conf", "train.lr = 0.1\n\n# x\ntrain.stpes = 10\nmodel.x = 1\n");
    mc_cfg *c = cfg_new();
    load_conf(c, "typo.conf");
    cfg_float(c, "train.lr", 0, 0, 1);
    CHECK(cfg_check_unknown(c, (const char *[]){"train", NULL}) != 0, "unknown key accepted");
    CHECK(strstr(mc_error(), "typo.conf:4") && strstr(mc_error(), "train.stpes"), "message: %s", mc_error());
    /* Namespaces the stage does not own are not its business. */
    cfg_free(c);
}

static void test_errors_name_file_and_line(void) {
    mc_cfg *c = cfg_new();
    CHECK(cfg_load_text(c, "a.b = 1\nno equals here\n", "bad.conf") != 0, "bad line accepted");
    CHECK(strstr(mc_error(), "bad.conf:2"), "message: %s", mc_error());
    CHECK(cfg_load_text(c, "a b = 1\n", "bad2.conf") != 0, "bad key accepted");
    CHECK(strstr(mc_error(), "bad2.conf:1"), "message: %s", mc_error());
    CHECK(cfg_load_text(c, "include /nonexistent.conf\n", "inc.conf") != 0, "missing include accepted");
    CHECK(strstr(mc_error(), "inc.conf:1") && strstr(mc_error(), "nonexistent"), "message: %s", mc_error());
    cfg_free(c);
    c = cfg_new();
    cfg_load_text(c, "\nx.n = 12\nx.f = abc\nx.e = maybe\nx.b = perhaps\n", "t.conf");
    long l;
    double d;
    int e, b;
    CHECK(cfg_get_int(c, "x.n", 0, 0, 10, &l) != 0 && strstr(mc_error(), "t.conf:2"), "range: %s", mc_error());
    CHECK(cfg_get_float(c, "x.f", 0, 0, 1, &d) != 0 && strstr(mc_error(), "t.conf:3"), "float: %s", mc_error());
    CHECK(cfg_get_enum(c, "x.e", "a", (const char *[]){"yes", "no", NULL}, &e) != 0 &&
              strstr(mc_error(), "t.conf:4") && strstr(mc_error(), "yes, no"), "enum: %s", mc_error());
    CHECK(cfg_get_bool(c, "x.b", 0, &b) != 0 && strstr(mc_error(), "t.conf:5"), "bool: %s", mc_error());
    const char *s;
    CHECK(cfg_get_str(c, "x.required", NULL, &s) != 0 && strstr(mc_error(), "x.required"), "required: %s", mc_error());
    CHECK(cfg_set(c, "novalue") != 0, "--set without = accepted");
    cfg_free(c);
}

static void test_include_cycle(void) {
    write_file("cyc1.conf", "include cyc2.conf\n");
    write_file("cyc2.conf", "include cyc1.conf\n");
    mc_cfg *c = cfg_new();
    CHECK(load_conf(c, "cyc1.conf") != 0, "include cycle accepted");
    cfg_free(c);
}

static void digest(mc_key *k, char *out) { key_digest(k, out); }

/* A train-like key: stage, binary digest, train.lr=0.001, model.d_model=32
 * and input data. */
static mc_key *key_of(const char *stage, const char *binary, const char *data) {
    mc_key *k = key_new(stage);
    key_binary_hex(k, binary);
    key_config(k, "train.lr", "0.001");
    key_config(k, "model.d_model", "32");
    key_input(k, "data", data);
    return k;
}

/* Set name = value in k: is its key still base? */
static int same_after(mc_key *k, const char *name, const char *value, const char *base) {
    char now[33];
    key_config(k, name, value);
    digest(k, now);
    return !strcmp(base, now);
}

static void test_keys(void) {
    static const char bin[] = "00112233445566778899aabbccddeeff", data[] = "ffffffffffffffffffffffffffffffff";
    char base[33], other[33];
    mc_key *k = key_of("train", bin, data);
    digest(k, base);
    CHECK(strlen(base) == 32, "length");
    CHECK(!strcmp(key_text(k), "stage train\nbinary 00112233445566778899aabbccddeeff\nconfig model.d_model=32\n"
                               "config train.lr=0.001\ninput data ffffffffffffffffffffffffffffffff\n"),
          "canonical text:\n%s", key_text(k));
    /* order of config lines does not matter */
    mc_key *k2 = key_new("train");
    key_binary_hex(k2, bin);
    key_input(k2, "data", data);
    key_config(k2, "model.d_model", "32");
    key_config(k2, "train.lr", "0.001");
    digest(k2, other);
    CHECK(!strcmp(base, other), "order changed the key");
    /* any config value changes it */
    CHECK(!same_after(k2, "train.lr", "0.002", base), "config value did not change the key");
    CHECK(same_after(k2, "train.lr", "0.001", base), "reverting did not restore the key");
    CHECK(!same_after(k2, "train.extra", "1", base), "new config value did not change the key");
    key_free(k2);
    /* input keys, stage name and binary change it */
    k2 = key_of("train", bin, "fffffffffffffffffffffffffffffffe");
    digest(k2, other);
    CHECK(strcmp(base, other) != 0, "input key did not change the key");
    key_free(k2);
    k2 = key_of("fisher", bin, data);
    digest(k2, other);
    CHECK(strcmp(base, other) != 0, "stage did not change the key");
    CHECK(key_input(k2, "x", "nothex") != 0, "bad input key accepted");
    key_free(k2);
    /* the same stage, config and inputs from another binary: another key */
    k2 = key_of("train", "00112233445566778899aabbccddeefe", data);
    digest(k2, other);
    CHECK(strcmp(base, other) != 0, "binary did not change the key");
    key_binary_hex(k2, bin);
    digest(k2, other);
    CHECK(!strcmp(base, other), "the base binary did not restore the key");
    key_free(k2);
    key_free(k);
}

int main(void) {
    t_tmpdir(dir, sizeof dir, "mats-test-config");
    RUN(test_parse_include_override);
    RUN(test_unknown_key_names_file_and_line);
    RUN(test_errors_name_file_and_line);
    RUN(test_include_cycle);
    RUN(test_keys);
    return t_done_rm(dir);
}
