"""WordCount's Faust workers connect the way every other LaStream client does: the
LASTREAM_KAFKA_* security settings reach aiokafka. No SASL broker here, so this checks
what the real Faust app hands aiokafka."""

import ssl

import certifi
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from lastream_stream.settings import KafkaSettings, LastreamSettings
from wordcount_app.worker import build_app


def aiokafka_auth(kafka: KafkaSettings, wc, tmp_path) -> dict:
    app = build_app("splitter", wc, LastreamSettings(kafka=kafka), tmp_path)
    return credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)


def test_sasl_ssl_settings_give_the_faust_app_sasl_credentials_over_verified_tls(wc, tmp_path):
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="wordcount",
        sasl_password="s3cret",
        extra={"ssl.ca.location": certifi.where()},
    )
    app = build_app("splitter", wc, LastreamSettings(kafka=kafka), tmp_path)
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("wordcount", "s3cret")
    context = auth["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded


def test_ssl_settings_give_the_faust_app_tls(wc, tmp_path):
    auth = aiokafka_auth(KafkaSettings(security_protocol="SSL"), wc, tmp_path)
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_plaintext_settings_give_plaintext(wc, tmp_path):
    assert aiokafka_auth(KafkaSettings(), wc, tmp_path) == {"security_protocol": "PLAINTEXT"}


def test_a_sasl_mechanism_the_workers_cannot_speak_is_refused_by_name(wc, tmp_path):
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI")
    with pytest.raises(ValueError, match="LASTREAM_KAFKA_SASL_MECHANISM is 'GSSAPI'"):
        build_app("splitter", wc, LastreamSettings(kafka=kafka), tmp_path)
