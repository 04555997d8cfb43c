//! The gateway's users file and credentials: a token admits its user and
//! nobody else, a client certificate admits only a user admitted by
//! certificate, no credentials and a made-up token are refused, and each
//! bad field of the file is named.

#![allow(clippy::expect_used)]

use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_share::online::users::{User, Users, UsersError};

fn user(name: &str, certificate: bool) -> User {
    User {
        name: name.into(),
        token_sha256: None,
        certificate,
        rate: None,
        burst: None,
    }
}

fn users_with_tokens() -> (Users, String, String) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut users = Users::empty();
    let alice = users
        .add_token_user(user("alice", false), &mut rng)
        .expect("alice");
    let bob = users
        .add_token_user(user("bob", false), &mut rng)
        .expect("bob");
    users.add(user("bank-a", true)).expect("bank-a");
    (users, alice, bob)
}

#[test]
fn a_token_or_a_certificate_admits_its_user_only() {
    let (users, alice, bob) = users_with_tokens();
    let reread =
        Users::parse(Path::new("users.toml"), &users.to_text().expect("text")).expect("round trip");
    assert_eq!(reread, users);
    assert_eq!(
        reread.authenticate(Some(&alice), None).map(|u| &u.name[..]),
        Ok("alice")
    );
    assert_eq!(
        reread.authenticate(Some(&bob), None).map(|u| &u.name[..]),
        Ok("bob")
    );
    assert_eq!(
        reread.authenticate(Some("sotto_00"), None),
        Err(UsersError::BadToken)
    );
    assert_eq!(
        reread
            .authenticate(None, Some("bank-a"))
            .map(|u| &u.name[..]),
        Ok("bank-a")
    );
    assert_eq!(
        reread.authenticate(None, Some("alice")),
        Err(UsersError::UnknownCertificate("alice".into())),
        "alice is admitted by token, not by certificate"
    );
    assert_eq!(
        reread.authenticate(None, None),
        Err(UsersError::NoCredentials)
    );
    assert!(
        !users.to_text().expect("text").contains(&alice),
        "the file keeps the token's hash, never the token"
    );
}

#[test]
fn a_user_is_added_once() {
    let (mut users, _, _) = users_with_tokens();
    assert_eq!(
        users.add(user("alice", true)),
        Err("user alice already exists; pick another name".into())
    );
}

#[test]
fn each_bad_field_of_a_users_file_is_named() {
    let parse = |text: &str| Users::parse(Path::new("users.toml"), text);
    let invalid = |text: &str| match parse(text) {
        Err(UsersError::Invalid { reason, .. }) => reason,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(
        invalid("format = 1\n[[user]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n"),
        "token_sha256 is 64 hex digits"
    );
    assert_eq!(
        invalid("format = 1\n[[user]]\nname = \"a\"\n"),
        "admits nothing: give token_sha256 or certificate = true"
    );
    assert_eq!(
        invalid("format = 1\n[[user]]\nname = \"a\"\ncertificate = true\n[[user]]\nname = \"a\"\ncertificate = true\n"),
        "listed twice"
    );
    match parse("format = 1\n[[user]]\nname = \"a\"\ncertificat = true\n") {
        Err(UsersError::Syntax { reason, .. }) => {
            assert!(reason.contains("line 4"), "{reason}");
            assert!(reason.contains("certificat"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match parse("format = 2\n") {
        Err(UsersError::Syntax { reason, .. }) => assert!(reason.contains("format 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
