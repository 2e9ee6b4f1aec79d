use super::*;

const MINIMAL: &str = r#"
[warehouse]
kind = "snowflake"
account = "xy12345"
user = "SIGNALS"
password = "hunter2"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Loaded> {
    Config::from_toml(
        text,
        Path::new("test.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn snowflake(c: &Config) -> &SnowflakeConfig {
    match &c.warehouse {
        WarehouseConfig::Snowflake(s) => s,
        other => panic!("not snowflake: {other:?}"),
    }
}

#[test]
fn defaults_fill_everything_but_the_warehouse() {
    let c = load(MINIMAL, &[]).unwrap().config;
    assert_eq!(c.scheduler.interval, Duration::from_secs(300));
    assert_eq!(c.sync.lookback, Duration::from_secs(600));
    assert_eq!(c.sync.page_rows, 50_000);
    assert_eq!(c.profiles.project, "signals");
}

#[test]
fn run_history_and_stall_after_are_bounded() {
    let c = load(MINIMAL, &[]).unwrap().config;
    assert_eq!(c.sync.run_history, 20);
    assert_eq!(c.scheduler.stall_after, Duration::from_secs(120));
    for (key, value, named) in [
        ("MATERIALIZER__SYNC__RUN_HISTORY", "0", "sync.run_history"),
        (
            "MATERIALIZER__SYNC__RUN_HISTORY",
            "1001",
            "sync.run_history",
        ),
        (
            "MATERIALIZER__SCHEDULER__STALL_AFTER",
            "5s",
            "scheduler.stall_after",
        ),
        (
            "MATERIALIZER__SCHEDULER__STALL_AFTER",
            "2h",
            "scheduler.stall_after",
        ),
    ] {
        let Err(e) = load(MINIMAL, &[(key, value)]) else {
            panic!("{key}={value} was accepted");
        };
        let e = format!("{e:#}");
        assert!(e.contains(named), "{key}={value}: {e}");
    }
    let c = load(MINIMAL, &[("MATERIALIZER__SYNC__RUN_HISTORY", "1000")]).unwrap();
    assert_eq!(c.config.sync.run_history, 1000);
}

#[test]
fn env_overrides_nested_keys_and_numbers() {
    let c = load(
        MINIMAL,
        &[
            ("MATERIALIZER__SYNC__PAGE_ROWS", "7"),
            ("MATERIALIZER__SCHEDULER__INTERVAL", "30s"),
            ("MATERIALIZER__WAREHOUSE__PASSWORD", "12345"),
            ("MATERIALIZER__REGISTRY__FILES", r#"["a/*.json", "b.toml"]"#),
            ("OTHER", "x"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.sync.page_rows, 7);
    assert_eq!(c.scheduler.interval, Duration::from_secs(30));
    assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), "12345");
    assert_eq!(c.registry.files, vec!["a/*.json", "b.toml"]);
}

#[test]
fn bad_duration_names_the_key() {
    let e = load(
        &format!("{MINIMAL}\n[sync]\nlookback = \"ten minutes\"\n"),
        &[],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("lookback") && e.contains("ten minutes"), "{e}");
}

#[test]
fn unknown_keys_are_reported() {
    let l = load(&format!("{MINIMAL}\n[sync]\nlookbak = \"1m\"\n"), &[]).unwrap();
    assert_eq!(l.unknown_keys, vec!["sync.lookbak"]);
}

#[test]
fn missing_credentials_name_the_keys() {
    let e = load(
        "[warehouse]\nkind = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\n",
        &[],
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("MATERIALIZER__WAREHOUSE__PASSWORD"), "{e}");
}

#[test]
fn secrets_never_show_in_debug() {
    let c = load(
        &MINIMAL.replace(
            "[warehouse]",
            "[profiles]\nredis_url = \"redis://u:s3cret@h:1\"\n[warehouse]",
        ),
        &[],
    )
    .unwrap()
    .config;
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn api_tokens_come_from_env_and_stay_redacted() {
    let c = load(
        &format!("{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\n"),
        &[("MATERIALIZER__API__TOKENS", r#"["tok-a", "tok-b"]"#)],
    )
    .unwrap()
    .config;
    assert_eq!(c.api.tokens.len(), 2);
    assert_eq!(c.api.tokens[1].expose(), "tok-b");
    let shown = format!("{c:?}");
    assert!(!shown.contains("tok-a"), "{shown}");
}

#[test]
fn api_without_tokens_refuses_a_non_loopback_listen() {
    let e = load(
        &format!("{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\n"),
        &[],
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("api.listen") && e.contains("api.tokens"), "{e}");
    let ok = load(
        &format!("{MINIMAL}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
        &[],
    );
    assert!(ok.is_ok());
}
fn with_password(value: &str) -> String {
    MINIMAL.replace("password = \"hunter2\"", &format!("password = {value}"))
}

#[test]
fn scalar_secrets_load_as_their_text() {
    let c = load(
        &format!(
            "{}\n[api]\ntokens = [123, true, 1.0]\n",
            with_password("12345678")
        ),
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(
        snowflake(&c).password.as_ref().unwrap().expose(),
        "12345678"
    );
    let tokens: Vec<&str> = c.api.tokens.iter().map(Secret::expose).collect();
    assert_eq!(tokens, ["123", "true", "1.0"]);
}

#[test]
fn wrong_shaped_secrets_are_not_quoted_in_errors() {
    let cases = [
        with_password("[13579, 24680]"),
        with_password("{ a = 13579, b = 24680 }"),
        format!("{MINIMAL}\n[api]\ntokens = \"13579-24680\"\n"),
        format!("{MINIMAL}\n[api]\ntokens = 1357924680\n"),
        format!("{MINIMAL}\n[api]\ntokens = [[13579, 24680]]\n"),
        format!("{MINIMAL}\n[profiles]\nredis_url = 1357924680\n"),
        format!("{MINIMAL}\n[profiles]\nredis_url = [\"redis://:13579-24680@h\"]\n"),
    ];
    for text in cases {
        let e = load(&text, &[]).err().expect(&text);
        for shown in [format!("{e:#}"), format!("{e:?}")] {
            assert!(
                !shown.contains("13579") && !shown.contains("24680"),
                "{text}: {shown}"
            );
            assert!(shown.contains("expected"), "{text}: {shown}");
        }
    }
}

#[test]
fn env_password_starting_with_a_bracket_is_a_string() {
    for raw in ["[not-an-array", r#"["a", "b"]"#] {
        let c = load(MINIMAL, &[("MATERIALIZER__WAREHOUSE__PASSWORD", raw)])
            .unwrap()
            .config;
        assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), raw);
    }
}

#[test]
fn malformed_env_list_names_the_variable_not_the_value() {
    for raw in [r#"["tok-13579"#, "tok-13579", r#"{ a = "tok-13579" }"#] {
        let e = load(MINIMAL, &[("MATERIALIZER__API__TOKENS", raw)])
            .err()
            .expect(raw);
        for shown in [format!("{e:#}"), format!("{e:?}")] {
            assert!(shown.contains("MATERIALIZER__API__TOKENS"), "{shown}");
            assert!(!shown.contains("13579"), "{shown}");
        }
    }
    let e = load(
        MINIMAL,
        &[("MATERIALIZER__REGISTRY__FILES", "views/*.json")],
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("MATERIALIZER__REGISTRY__FILES"));
}

#[test]
fn ntz_time_zone_defaults_to_utc_and_a_bad_zone_is_one_line_naming_the_key() {
    let c = load(MINIMAL, &[]).unwrap().config;
    assert_eq!(c.warehouse.ntz_zone().unwrap(), chrono_tz::Tz::UTC);
    let c = load(
        MINIMAL,
        &[("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlin")],
    )
    .unwrap()
    .config;
    assert_eq!(
        c.warehouse.ntz_zone().unwrap(),
        chrono_tz::Tz::Europe__Berlin
    );
    let e = load(
        &MINIMAL.replace(
            "[warehouse]",
            "[warehouse]\nntz_time_zone = \"Europe/Berlln\"",
        ),
        &[],
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("warehouse.ntz_time_zone") && e.contains("Europe/Berlln") && !e.contains('\n'),
        "{e}"
    );
}

const PARQUET: &str = "[warehouse]\nkind = \"parquet\"\npath = \"data\"\n";

#[test]
fn a_snowflake_key_under_kind_parquet_is_an_unknown_key() {
    let l = load(
        &format!("{PARQUET}account = \"xy12345\"\npassword = \"hunter2\"\n"),
        &[("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "5s")],
    )
    .unwrap();
    assert_eq!(
        l.unknown_keys,
        [
            "warehouse.account",
            "warehouse.password",
            "warehouse.query_timeout"
        ]
    );
    match l.config.warehouse {
        WarehouseConfig::Parquet(p) => assert_eq!(p.path, Path::new("data")),
        other => panic!("{other:?}"),
    }
    // The same keys are the kind's own under kind = "snowflake".
    let l = load(&format!("{MINIMAL}query_timeout = \"5s\"\n"), &[]).unwrap();
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
}

#[test]
fn errors_inside_the_warehouse_section_name_the_key() {
    for (text, key) in [
        (
            format!("{MINIMAL}query_timeout = \"5 parsecs\"\n"),
            "warehouse.query_timeout",
        ),
        (MINIMAL.replace("snowflake", "snowflak"), "warehouse.kind"),
        (
            "[warehouse]\npath = \"data\"\n".to_string(),
            "warehouse.kind",
        ),
        (
            PARQUET.replace("path = \"data\"", "path = \"\""),
            "warehouse.path",
        ),
    ] {
        let e = format!("{:#}", load(&text, &[]).err().expect(&text));
        assert!(e.contains(key) && !e.contains('\n'), "{text}: {e}");
    }
}

#[test]
fn env_overrides_nested_keys_through_the_crate() {
    let c = load(
        MINIMAL,
        &[
            ("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "45s"),
            ("MATERIALIZER__WAREHOUSE__ROLE", "SIGNALS_ROLE"),
            ("MATERIALIZER__API__MAX_CONNECTIONS", "9"),
            ("MATERIALIZER__PROFILES__PROJECT", "shop"),
            // Names are matched as written, as before: not this one.
            ("materializer__sync__page_rows", "1"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.api.max_connections, 9);
    assert_eq!(c.profiles.project, "shop");
    assert_eq!(c.sync.page_rows, 50_000);
    let s = snowflake(&c);
    assert_eq!(s.query_timeout, Duration::from_secs(45));
    assert_eq!(s.role.as_deref(), Some("SIGNALS_ROLE"));
    assert_eq!(s.account, "xy12345");
    // The environment can switch the kind; the file's other keys then
    // become unknown keys of the new kind.
    let l = load(
        MINIMAL,
        &[
            ("MATERIALIZER__WAREHOUSE__KIND", "parquet"),
            ("MATERIALIZER__WAREHOUSE__PATH", "data"),
        ],
    )
    .unwrap();
    assert_eq!(l.config.warehouse.kind(), WarehouseKind::Parquet);
    assert_eq!(
        l.unknown_keys,
        ["warehouse.account", "warehouse.password", "warehouse.user"]
    );
}

#[test]
fn numeric_looking_env_password_stays_text() {
    for raw in ["12345", "0012345", "1e3", "-0", "true", "1_000"] {
        let c = load(MINIMAL, &[("MATERIALIZER__WAREHOUSE__PASSWORD", raw)])
            .unwrap()
            .config;
        assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), raw);
    }
}

#[test]
fn the_derived_tagged_form_reads_what_the_loader_reads() {
    for text in [MINIMAL, PARQUET] {
        let loaded = load(text, &[]).unwrap().config.warehouse;
        let table: toml::Table = toml::from_str(text).unwrap();
        let derived: WarehouseConfig = table["warehouse"].clone().try_into().unwrap();
        assert_eq!(format!("{derived:?}"), format!("{loaded:?}"));
    }
}

/// A file in a fresh scratch directory, holding `text`.
fn secret_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "materializer-config-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tokens_and_the_redis_url_come_from_files() {
    let tokens = secret_file(
        "tokens",
        "# rotated 2026-11\ntok-one\n\n  tok-two  \n#tok-old\n",
    );
    let url = secret_file("url", "redis://:pw-F4kq9@h:6380/\n");
    let text = format!(
        "{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\ntokens_file = \"{}\"\n[profiles]\nredis_url_file = \"{}\"\n",
        tokens.display(),
        url.display()
    );
    let c = load(&text, &[]).unwrap().config;
    let read: Vec<&str> = c.api.tokens.iter().map(Secret::expose).collect();
    assert_eq!(read, ["tok-one", "tok-two"]);
    assert_eq!(c.profiles.redis_url.expose(), "redis://:pw-F4kq9@h:6380/");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("tok-one") && !shown.contains("pw-F4kq9"),
        "{shown}"
    );
    // The same keys from the environment, as a Kubernetes manifest sets them.
    let env = [
        ("MATERIALIZER__API__TOKENS_FILE", tokens.to_str().unwrap()),
        (
            "MATERIALIZER__PROFILES__REDIS_URL_FILE",
            url.to_str().unwrap(),
        ),
    ];
    let c = load(MINIMAL, &env).unwrap().config;
    assert_eq!(c.api.tokens.len(), 2);
    assert_eq!(c.profiles.redis_url.expose(), "redis://:pw-F4kq9@h:6380/");
}

#[test]
fn secret_files_are_exclusive_with_their_key_and_errors_never_show_content() {
    let tokens = secret_file("tokens", "tok-Zq81\n");
    let url = secret_file("url", "redis://:pw-Zq81@h:1/");
    let tokens_file = format!("tokens_file = \"{}\"", tokens.display());
    let url_file = format!("redis_url_file = \"{}\"", url.display());
    let missing = tokens.with_file_name("absent");
    let junk = secret_file("junk", "not a url pw-Zq81\n");
    let cases = [
        (
            format!("{MINIMAL}\n[api]\ntokens = [\"x\"]\n{tokens_file}\n"),
            "api: set only one of tokens, tokens_file",
        ),
        (
            format!("{MINIMAL}\n[profiles]\nredis_url = \"redis://h\"\n{url_file}\n"),
            "profiles: set only one of redis_url, redis_url_file",
        ),
        (
            format!(
                "{MINIMAL}\n[api]\ntokens_file = \"{}\"\n",
                missing.display()
            ),
            "api.tokens_file: cannot read",
        ),
        (
            format!(
                "{MINIMAL}\n[api]\ntokens_file = \"{}\"\n",
                secret_file("empty", "# none yet\n\n").display()
            ),
            "holds no token",
        ),
        (
            format!(
                "{MINIMAL}\n[profiles]\nredis_url_file = \"{}\"\n",
                junk.display()
            ),
            "profiles.redis_url_file: `[unparseable redis url]` is not a Redis URL",
        ),
    ];
    for (text, want) in cases {
        let e = load(&text, &[]).err().expect(&text);
        let shown = format!("{e:#}");
        assert!(shown.contains(want), "{text}\n{shown}");
        assert!(!shown.contains("Zq81"), "{text}\n{shown}");
        assert_eq!(shown.lines().count(), 1, "{shown}");
    }
    // The inline key from the environment counts as set too.
    let e = load(
        &format!("{MINIMAL}\n[api]\n{tokens_file}\n"),
        &[("MATERIALIZER__API__TOKENS", "[\"y\"]")],
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("only one of tokens, tokens_file"));
}

#[test]
fn postgres_url_is_a_secret_from_the_value_a_file_or_the_environment() {
    let text =
        "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://u:pg-s3cret@db:5432/analytics\"\n";
    let loaded = load(text, &[]).unwrap();
    let WarehouseConfig::Postgres(p) = &loaded.config.warehouse else {
        panic!("not postgres");
    };
    assert_eq!(
        p.url().unwrap().expose(),
        "postgres://u:pg-s3cret@db:5432/analytics"
    );
    assert!(!format!("{:?}", loaded.config).contains("pg-s3cret"));
    // From the environment, and a key the kind does not have is unknown.
    let loaded = load(
        "[warehouse]\nkind = \"postgres\"\naccount = \"x\"\n",
        &[("MATERIALIZER__WAREHOUSE__URL", "postgres://u@h/db")],
    )
    .unwrap();
    assert_eq!(loaded.unknown_keys, vec!["warehouse.account".to_string()]);
    // A file; both at once; neither; a bad URL never quoted.
    let dir = std::env::temp_dir().join(format!("mz-pg-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("url");
    std::fs::write(&file, "postgres://u:f1le@h/db\n").unwrap();
    let with_file = format!("[warehouse]\nkind = \"postgres\"\nurl_file = {:?}\n", file);
    let loaded = load(&with_file, &[]).unwrap();
    let WarehouseConfig::Postgres(p) = &loaded.config.warehouse else {
        panic!("not postgres");
    };
    assert_eq!(p.url().unwrap().expose(), "postgres://u:f1le@h/db");
    let e = load(&format!("{with_file}url = \"postgres://u@h/db\"\n"), &[])
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("only one of url, url_file"),
        "{e:#}"
    );
    let e = load("[warehouse]\nkind = \"postgres\"\n", &[])
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("warehouse.url: required"),
        "{e:#}"
    );
    let e = load(
        "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://u:pg-s3cret@db:nope/x\"\n",
        &[],
    )
    .err()
    .unwrap();
    assert!(
        !format!("{e:#}").contains("pg-s3cret") && format!("{e:#}").contains("warehouse.url"),
        "{e:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
